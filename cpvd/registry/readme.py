"""The README that CPV writes at the root of a registry: how to read it without CPV.

Every command in it is checked against a real registry with the real ``git``/``dvc`` CLIs
(tests/e2e/test_registry_readme.py). ``dvc artifacts get --rev`` takes the version alone
(``v1.2.0``); the full tag name (``name@v1.2.0``) fails with "Unable to find artifact".
"""

from __future__ import annotations

REGISTRY_README = """\
# Model registry (managed by CPV)

Each artifact is a line of versions. Versions are Git tags `<artifact>@vX.Y.Z` (annotated;
the tag message is JSON: source, host, md5, size, metrics, lineage, parent); stages are GTO
tags `<artifact>#<stage>#N`. The bytes live in the DVC remote configured in `.dvc/config`.

Read it without CPV:

    git tag -l '*@v*'                                # every version
    git show vision/resnet50@v1.2.0                  # its metadata
    git checkout vision/resnet50@v1.2.0 && dvc pull  # its bytes, in artifacts/<name>/checkpoint
    dvc artifacts get <this repo URL> vision/resnet50 --rev v1.2.0   # into ./checkpoint
    dvc artifacts get <this repo URL> vision/resnet50 --stage prod   # the version in prod
    gto show                                         # versions and stages (pip install gto)
"""

#: the line earlier CPV versions wrote, which dvc refuses (the full tag name as ``--rev``)
_BROKEN_GET = "dvc artifacts get <this repo URL> vision/resnet50 --rev vision/resnet50@v1.2.0\n"
_FIXED_GET = _BROKEN_GET.replace("vision/resnet50@v1.2.0\n", "v1.2.0   # into ./checkpoint\n")


def current_readme(existing: str | None) -> str:
    """What the registry's README should hold: a new one, or the existing one (a team may
    have edited it) with the broken ``dvc artifacts get`` line earlier versions wrote fixed."""
    if not existing:
        return REGISTRY_README
    return existing.replace(_BROKEN_GET, _FIXED_GET)
