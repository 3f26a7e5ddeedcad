"""What the interleaving tests (``test_occ_reads``, ``test_search_reads``) share: ending
transaction A after another commit, and telling whether A conflicts."""

from __future__ import annotations

from typing import Any

from engine.commit import CommitRequest, read_log
from engine.errors import EngineError


def ends_in_conflict(db: Any, txn: Any, reads: Any, writable: bool) -> bool:
    """End ``txn`` (A) and say whether it conflicts: a mutation asks the committer (and
    commits if it does not conflict); a read-only query's ``reads`` (its frozen read set)
    are tested against the log since its snapshot, as the committer and a subscription
    would test them."""
    if writable:
        request = CommitRequest.from_transaction(txn)
        txn.close()
        db.committer.commit(request)
        return request.conflict is not None
    with db.storage.read() as rtxn:
        logged = [k for _, keys in read_log(rtxn, db.storage.log, txn.snapshot_ts) for k in keys]
    txn.close()
    return reads.first_hit(logged) is not None


def run_terminal(query: Any, terminal: str, n: int, page_options: dict[str, Any]) -> Any:
    """``query`` ended by ``terminal`` (``collect``, ``take`` n, ``first``, ``unique``,
    else ``paginate(page_options)``): a list of documents, a page, or ``("error", name)``
    for the :class:`EngineError` it raised."""
    try:
        if terminal == "collect":
            return query.collect()
        if terminal == "take":
            return query.take(n)
        if terminal in ("first", "unique"):
            found = query.first() if terminal == "first" else query.unique()
            return [] if found is None else [found]
        return query.paginate(page_options)
    except EngineError as error:
        return ("error", type(error).__name__)
