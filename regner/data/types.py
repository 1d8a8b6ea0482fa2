"""The canonical in-memory form of NER data: character offsets, end exclusive."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Entity:
    """A typed character span ``text[start:end]`` (end exclusive, like Python slices)."""

    start: int
    end: int
    type: str

    def mention(self, text: str) -> str:
        return text[self.start : self.end]


@dataclass
class Example:
    """One sentence with its gold entities; ``source`` says where it came from (file:line)."""

    text: str
    entities: list[Entity] = field(default_factory=list)
    source: str = ""

    def is_flat(self) -> bool:
        """True when no two entities overlap (so a BIO tagging can represent them)."""
        spans = sorted(self.entities)
        return all(a.end <= b.start for a, b in zip(spans, spans[1:]))
