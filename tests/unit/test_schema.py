"""The schema files in schema/ are generated from ndsclust/schema.py and cannot drift."""

from pathlib import Path

from ndsclust import schema

ROOT = Path(__file__).resolve().parents[2]


def test_schema_files_match_source() -> None:
    assert (ROOT / "schema" / "ndsclust.schema").read_text() == schema.render_schema(), (
        "schema/ndsclust.schema is stale: run `make schema`"
    )
    assert (ROOT / "schema" / "ndsclust.ldif").read_text() == schema.render_ldif(), (
        "schema/ndsclust.ldif is stale: run `make schema`"
    )


def test_design_attribute_names_are_all_defined() -> None:
    names = {a.name for a in schema.ATTRIBUTES}
    for required in (
        "ndsclustTag",
        "ndsclustType",
        "ndsclustCommand",
        "ndsclustUnloadCommand",
        "ndsclustHostServer",
        "ndsclustPrimaryServer",
        "ndsclustBackupServer",
        "ndsclustResource",
        "ndsclustAutoRecover",
        "ndsclustMarker",
        "ndsclustState",
        "ndsclustRequest",
    ):
        assert required in names


def test_oids_unique_and_under_the_arc() -> None:
    oids = [f"{schema.ARC}.1.{a.n}" for a in schema.ATTRIBUTES] + [
        f"{schema.ARC}.2.{o.n}" for o in schema.OBJECT_CLASSES
    ]
    assert len(oids) == len(set(oids))
    assert schema.ARC.startswith("2.25.")


def test_swap_attributes_are_single_valued_with_exact_matching() -> None:
    by_name = {a.name: a for a in schema.ATTRIBUTES}
    for name in ("ndsclustHostServer", "ndsclustState", "ndsclustRequest", "ndsclustMarker"):
        assert by_name[name].single and by_name[name].equality == "caseExactMatch"
    assert by_name["ndsclustAutoRecover"].equality == "booleanMatch"
    assert by_name["ndsclustBackupServer"].ordered_values


def test_version_is_found_in_rendered_object_classes() -> None:
    values = [o.definition() for o in schema.OBJECT_CLASSES]
    assert schema.version_in(values) == schema.VERSION
    assert schema.version_in(["( 1.2 NAME 'x' )"]) is None
