"""The query parser and printer: Bazel's precedence, words and quoting, let, errors with columns,
and (hypothesis) printing then re-parsing any expression gives it back."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mbuild.front.query.errors import ArityError, QuerySyntaxError, UnknownFunctionError
from mbuild.front.query.parser import parse
from mbuild.front.query.syntax import FUNCTIONS, KEYWORDS, Arg, BinOp, Call, Let, Op, SetOf, Var, Word, quote_word, unparse

a, b, c = Word("a"), Word("b"), Word("c")


def union(x, y):
    return BinOp(Op.UNION, x, y)


def intersect(x, y):
    return BinOp(Op.INTERSECT, x, y)


def minus(x, y):
    return BinOp(Op.EXCEPT, x, y)


# --- precedence and associativity: Bazel's "all three operators are left-associative and of equal
# precedence" (query reference, "Algebraic set operations"), so `^` does NOT bind tighter than `+`.


@pytest.mark.parametrize(
    "text, tree",
    [
        ("a ^ b + c", union(intersect(a, b), c)),
        ("a + b ^ c", intersect(union(a, b), c)),
        ("a - b - c", minus(minus(a, b), c)),
        ("a - b + c", union(minus(a, b), c)),
        ("a intersect b union c", union(intersect(a, b), c)),
        ("a intersect (b union c)", intersect(a, union(b, c))),
        ("a - (b - c)", minus(a, minus(b, c))),
        ("((a))", a),
    ],
)
def test_operators_have_equal_precedence_and_associate_left(text, tree):
    assert parse(text) == tree


def test_symbolic_and_nominal_operators_are_the_same():
    assert parse("a + b ^ c - a") == parse("a union b intersect c except a")


def test_let_binds_a_variable_and_its_body_reaches_right():
    assert parse("let v = a + b in $v - c") == Let("v", union(a, b), minus(Var("v"), c))
    assert parse("a + let v = b in $v + c") == union(a, Let("v", b, union(Var("v"), c)))
    assert parse("(let v = b in $v) + c") == union(Let("v", b, Var("v")), c)


def test_functions_take_expressions_words_and_integers_per_signature():
    assert parse("deps(//a:b)") == Call("deps", (Word("//a:b"),))
    assert parse("deps(//a:b, 2)") == Call("deps", (Word("//a:b"), 2))
    assert parse("rdeps(//..., :x, 0)") == Call("rdeps", (Word("//..."), Word(":x"), 0))
    assert parse('kind("source file", deps(x))') == Call("kind", ("source file", Call("deps", (Word("x"),))))
    assert parse("attr(tags, '[\\[ ]remote[,\\]]', //...)") == Call("attr", ("tags", "[\\[ ]remote[,\\]]", Word("//...")))
    assert parse("set(a 'b+c' //p/...)") == SetOf(("a", "b+c", "//p/..."))
    assert parse("set()") == SetOf(())


def test_words_follow_bazel_lexical_rules():
    assert parse("//foo:bar+wiz") == union(Word("//foo:bar"), Word("wiz"))  # '+' is an operator...
    assert parse('"//foo:bar+wiz"') == Word("//foo:bar+wiz")  # ...unless quoted
    assert parse("//p:a-b") == Word("//p:a-b")  # '-' inside a word is part of it
    assert parse("//p:a -b") == minus(Word("//p:a"), Word("b"))  # a word cannot start with '-'
    assert parse('"union" + "let"') == union(Word("union"), Word("let"))  # quoted keywords are words
    assert parse("'$x'") == Word("$x")  # quoted: a word, not a variable
    assert parse("//p/...:all") == Word("//p/...:all")
    assert parse("  //a:b\t") == Word("//a:b")


def test_printer_uses_nominal_operators_and_minimal_parentheses():
    assert unparse(parse("a ^ b + c")) == "a intersect b union c"
    assert unparse(parse("a - (b - c)")) == "a except (b except c)"
    assert unparse(parse("(let v = a in $v) + b")) == "(let v = a in $v) union b"
    assert unparse(parse("kind('source file', x) + set(a \"b+c\")")) == 'kind("source file", x) union set(a "b+c")'
    assert quote_word("in") == '"in"' and quote_word("") == '""' and quote_word('say "hi"') == "'say \"hi\"'"


@pytest.mark.parametrize(
    "text, column, message, error",
    [
        ("deps(//a:b", 11, "expected ')', found the end of the query", QuerySyntaxError),
        ("deps(//a:b))", 12, "unexpected ')' after a complete expression", QuerySyntaxError),
        ("//a:b //c:d", 7, "unexpected word '//c:d' after a complete expression", QuerySyntaxError),
        ("a + ", 5, "expected an expression, found the end of the query", QuerySyntaxError),
        ("a + )", 5, "expected an expression, found ')'", QuerySyntaxError),
        ('kind("rule, x)', 6, 'unclosed quotation "', QuerySyntaxError),
        ("a & b", 3, "unexpected character '&'", QuerySyntaxError),
        ("*a", 1, "unexpected character '*'", QuerySyntaxError),
        ("dep(//a:b)", 1, "unknown function 'dep' (did you mean 'deps'", UnknownFunctionError),
        ("x + somepaht(a, b)", 5, "unknown function 'somepaht' (did you mean 'somepath'", UnknownFunctionError),
        ("deps()", 6, "deps(x[, depth]) takes 1 or 2 arguments, got 0", ArityError),
        ("deps(a, 1, b, c)", 10, "deps(x[, depth]) takes 1 or 2 arguments, got 4", ArityError),
        ("rdeps(//...)", 12, "rdeps(universe, x[, depth]) takes 2 or 3 arguments, got 1", ArityError),
        ("attr(a, b)", 10, "attr(name, pattern, x) takes 3 arguments, got 2", ArityError),
        ("siblings(a, b)", 11, "siblings(x) takes 1 argument, got 2", ArityError),
        ("deps(a, x)", 9, "deps(): depth must be a non-negative integer, found word 'x'", QuerySyntaxError),
        ("deps(a, -1)", 9, "deps(): depth must be a non-negative integer, found '-'", QuerySyntaxError),
        ("deps(a, '2')", 9, "deps(): depth must be a non-negative integer, found word '2'", QuerySyntaxError),
        ("kind(set, a)", 6, "kind(): expected a word for pattern, found 'set'", QuerySyntaxError),
        ("let 9 = a in b", 5, "expected a variable name after 'let', found word '9'", QuerySyntaxError),
        ("let v a in b", 7, "expected '=', found word 'a'", QuerySyntaxError),
        ("let v = a b", 11, "expected 'in', found word 'b'", QuerySyntaxError),
        ("$9", 1, "bad variable reference '$9'", QuerySyntaxError),
        ("set(a deps(b))", 11, "expected ')', found '('", QuerySyntaxError),
    ],
)
def test_syntax_errors_name_the_column(text, column, message, error):
    with pytest.raises(error) as info:
        parse(text)
    assert info.value.column == column
    assert message in str(info.value)
    # The message shows the query with a caret under the column.
    assert str(info.value).endswith(f"\n  {text}\n  {' ' * (column - 1)}^")


# --- property: printing then re-parsing is the identity ------------------------------------------

_WORD_CHARS = st.sampled_from(list("abcxyz019/:._-@~$*[]+=,() \"'") + ["é"])
words = st.one_of(
    st.sampled_from(sorted(KEYWORDS)),
    st.sampled_from(["//...", "//p:all", ":x", "//a/b:c.txt", "$v", "3", ".*test rule"]),
    st.text(_WORD_CHARS, max_size=8),
).filter(lambda w: not ('"' in w and "'" in w))
identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,4}", fullmatch=True)


def _call(children):
    def args_for(item):
        name, signature = item
        kinds = [kind for _, kind in signature.params]
        kinds += kinds[-1:] * 3 if signature.variadic else []  # rbuildfiles(a, b, c, d)
        strategies = {Arg.EXPR: children, Arg.WORD: words, Arg.INT: st.integers(0, 10_000)}
        return st.integers(signature.required, len(kinds)).flatmap(
            lambda n: st.tuples(*(strategies[k] for k in kinds[:n])).map(lambda args: Call(name, args))
        )

    return st.sampled_from(sorted(FUNCTIONS.items())).flatmap(args_for)


expressions = st.recursive(
    st.one_of(words.map(Word), identifiers.map(Var), st.lists(words, max_size=3).map(lambda ws: SetOf(tuple(ws)))),
    lambda children: st.one_of(
        st.builds(BinOp, st.sampled_from(list(Op)), children, children),
        st.builds(Let, identifiers.filter(lambda n: n not in KEYWORDS), children, children),
        _call(children),
    ),
    max_leaves=12,
)


@settings(max_examples=400)
@given(expressions)
def test_printing_then_parsing_is_the_identity(expr):
    text = unparse(expr)
    assert parse(text) == expr
    assert unparse(parse(text)) == text


@settings(max_examples=300)
@given(st.lists(st.sampled_from(["a", "//p:x", "+", "^", "-", "except", "(", ")", ",", "let", "v", "=", "in", "$v", "deps", "set", "'q'", "2"]), max_size=12))
def test_any_token_soup_parses_or_fails_with_a_column(tokens):
    text = " ".join(tokens)
    try:
        expr = parse(text)
    except QuerySyntaxError as exc:
        assert 1 <= exc.column <= len(text) + 1
    else:
        assert parse(unparse(expr)) == expr
