"""A base for the stateful tests that drive one engine in a temporary folder."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from engine import Engine


class EngineMachine(RuleBasedStateMachine):
    """A state machine with ``self.engine``, opened on a fresh folder (``self.folder``)
    with the class's ``schema`` and durability ``"none"``, and a ``self.model`` dict of
    the documents of table ``docs`` by id, for the reference, and the bundle
    ``documents`` of their ids (a subclass's insert rule fills it; ``delete`` here draws
    from it); after every step
    ``Engine.check()`` passes and ``docs`` holds as many documents as the model; the
    engine is closed and the folder removed by ``teardown``."""

    schema: Any = None
    documents = Bundle("documents")

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp()
        self.engine = Engine.open(self.folder, schema=self.schema, durability="none")
        self.model: dict[str, dict[str, Any]] = {}

    @rule(doc_id=documents)
    def delete(self, doc_id: str) -> None:
        if doc_id not in self.model:
            return
        self.engine.run(lambda ctx: ctx.db.delete(doc_id))
        del self.model[doc_id]

    @invariant()
    def consistent(self) -> None:
        report = self.engine.check()
        assert report["tables"].get("docs", {"documents": 0})["documents"] == len(self.model)

    def teardown(self) -> None:
        self.engine.close()
        shutil.rmtree(self.folder, ignore_errors=True)
