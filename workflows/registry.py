"""Step types by name. The engine receives a registry; it never imports the steps."""

from __future__ import annotations

from collections.abc import Iterable

from workflows.step import Step


class StepRegistry:
    def __init__(self, step_classes: Iterable[type[Step]] = ()) -> None:
        self._types: dict[str, type[Step]] = {}
        for cls in step_classes:
            self.register(cls)

    def register(self, cls: type[Step]) -> type[Step]:
        if cls.type_name in self._types:
            raise ValueError(f"step type {cls.type_name!r} registered twice")
        self._types[cls.type_name] = cls
        return cls

    def get(self, type_name: str) -> type[Step]:
        return self._types[type_name]

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._types

    def names(self) -> list[str]:
        return sorted(self._types)

    def create(self, type_name: str) -> Step:
        return self._types[type_name]()
