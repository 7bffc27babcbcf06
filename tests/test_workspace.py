"""WORKSPACE.toml: found by walking up; unknown or mistyped settings are errors naming the key."""

import pytest

from mbuild.errors import WorkspaceError
from mbuild.model.workspace import load_workspace


def test_found_from_a_subdirectory(tmp_path):
    (tmp_path / "WORKSPACE.toml").write_text("[build]\njobs = 3\n")
    (tmp_path / "a" / "b").mkdir(parents=True)
    ws = load_workspace(tmp_path / "a" / "b")
    assert ws.root == tmp_path.resolve()
    assert ws.jobs == 3
    assert ws.cache_dir == tmp_path.resolve() / ".mbuild" / "cache"


def test_missing_workspace_file(tmp_path):
    with pytest.raises(WorkspaceError, match="no WORKSPACE.toml found"):
        load_workspace(tmp_path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[build]\njbos = 2\n", "unknown setting [build].jbos (did you mean 'jobs'?)"),
        ("[biuld]\njobs = 2\n", "unknown table [biuld] (did you mean 'build'?)"),
        ("[build]\njobs = \"two\"\n", "[build].jobs must be int, got str 'two'"),
        ("[build]\nkeep_going = 1\n", "[build].keep_going must be bool"),
        ("[workspace]\nsalt = 3\n", "[workspace].salt must be str"),
        ("[build\n", "WORKSPACE.toml: "),
        ("build = 3\n", "[build] must be a table"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, text, message):
    (tmp_path / "WORKSPACE.toml").write_text(text)
    with pytest.raises(WorkspaceError) as info:
        load_workspace(tmp_path)
    assert message in str(info.value)
    assert "WORKSPACE.toml" in str(info.value)


def test_empty_file_means_defaults(tmp_path):
    (tmp_path / "WORKSPACE.toml").write_text("")
    ws = load_workspace(tmp_path)
    assert ws.settings.workspace.salt == ""
    assert ws.outputs_dir == tmp_path.resolve() / "mbuild-out"
