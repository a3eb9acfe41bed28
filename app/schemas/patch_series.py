"""The patch series library as the API shows it."""

from __future__ import annotations

from pydantic import BaseModel


class PatchOut(BaseModel):
    name: str
    strip: int
    size: int
    sha256: str
    description: str | None


class SeriesSummary(BaseModel):
    source: str
    name: str
    title: str
    patches: list[str]


class SeriesList(BaseModel):
    items: list[SeriesSummary]
    total: int


class SeriesDetail(SeriesSummary):
    readme: str
    patch_details: list[PatchOut]
