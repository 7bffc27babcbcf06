"""Which blobs the remote CAS lacks, in few requests: for a big batch on a small cache, one listing
page per prefix directory answers many digests at once; otherwise one metadata request each."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from mbuild.stores.remote import limits
from mbuild.stores.remote.calls import Link
from mbuild.stores.remote.outcomes import Failed, Missing


async def missing(link: Link, digests: set[str]) -> set[str]:
    """The digests not confirmed present remotely (absent, or unknown because a request failed)."""
    if not digests:
        return set()
    backend = link.backend
    present: set[str] = set()

    async def stat(digest: str) -> None:
        try:
            await link.call(f"checking cas/{digest}", lambda: backend.stat(link.blob(digest)))
            present.add(digest)
        except (Missing, Failed):
            pass

    async def listing(prefix: str) -> tuple[set[str], bool] | None:
        """One page of the prefix directory: (names, whether that was all of it); None if it failed."""
        try:
            return await link.call(f"listing cas/{prefix}/", lambda: backend.list_page(f"{backend.root}/cas/{prefix}"))
        except Missing:
            return set(), True
        except Failed:
            return None

    groups: dict[str, list[str]] = defaultdict(list)
    for d in digests:
        groups[d[:2]].append(d)
    if not backend.can_list or len(digests) < limits.LIST_MIN_BATCH:
        await asyncio.gather(*(stat(d) for d in digests))
        return digests - present
    # A big batch: one page of the fullest prefix directory tells whether directories fit in a
    # page (a small cache). If so, one listing answers each directory holding >= 2 queried
    # digests; otherwise (or for lone digests) ask object by object. Every request is one page.
    order = sorted(groups, key=lambda p: -len(groups[p]))
    probe = await listing(order[0])
    small_cache = probe is not None and probe[1]
    unanswered: list[str] = []
    if probe is not None:
        present.update(d for d in groups[order[0]] if d in probe[0])
        if not probe[1]:
            unanswered.extend(d for d in groups[order[0]] if d not in probe[0])
    else:
        unanswered.extend(groups[order[0]])

    async def by_listing(prefix: str) -> None:
        page = await listing(prefix)
        if page is None:
            return
        present.update(d for d in groups[prefix] if d in page[0])
        if not page[1]:  # grew past a page meanwhile: ask for the rest one by one
            await asyncio.gather(*(stat(d) for d in groups[prefix] if d not in page[0]))

    tasks = [stat(d) for d in unanswered]
    for prefix in order[1:]:
        if small_cache and len(groups[prefix]) >= 2:
            tasks.append(by_listing(prefix))
        else:
            tasks.extend(stat(d) for d in groups[prefix])
    await asyncio.gather(*tasks)
    return digests - present
