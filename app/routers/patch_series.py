"""GET /patch-series: the library in patches/."""

from __future__ import annotations

from fastapi import APIRouter

from app.debian.patches import SeriesError
from app.deps import AdminDep, SettingsDep
from app.errors import ApiError
from app.schemas.patch_series import PatchOut, SeriesDetail, SeriesList, SeriesSummary
from app.services.patch_library import SeriesNotFound, list_series, load_series, patch_details

router = APIRouter(prefix="/patch-series", tags=["patch-series"])


@router.get("", response_model=SeriesList)
async def list_all(settings: SettingsDep, _: AdminDep) -> SeriesList:
    items = [
        SeriesSummary(source=s.source, name=s.name, title=s.title,
                      patches=[e.name for e in s.entries])
        for s in list_series(settings.patches_dir)
    ]
    return SeriesList(items=items, total=len(items))


@router.get("/{source}/{name}", response_model=SeriesDetail)
async def get_one(source: str, name: str, settings: SettingsDep, _: AdminDep) -> SeriesDetail:
    try:
        s = load_series(settings.patches_dir, source, name)
    except SeriesNotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from exc
    except SeriesError as exc:
        raise ApiError(409, "invalid_series", str(exc)) from exc
    return SeriesDetail(
        source=s.source, name=s.name, title=s.title, patches=[e.name for e in s.entries],
        readme=s.readme, patch_details=[PatchOut(**d) for d in patch_details(s)],
    )
