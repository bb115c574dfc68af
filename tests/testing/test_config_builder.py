"""lns.testing.config: the builder can write every table of the configuration, and its
TOML reads back as the document it was given."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lns.config import AaaSection, Config, ConfigError, DynauthSection, L2tpSection, load_config
from lns.testing.config import ConfigBuilder, toml_text
from lns.testing.freeradius import FreeRadius

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lns.toml"

# The arrays of tables, each with the builder method that adds one element.
ARRAYS = {
    ("l2tp", "lac"): "lac",
    ("aaa", "radius"): "radius",
    ("aaa", "dynauth", "client"): "dynauth_client",
}
# The tables, each with the builder method that fills it.
TABLES = {
    ("lns",): "lns",
    ("l2tp",): "l2tp",
    ("ppp",): "ppp",
    ("aaa",): "aaa",
    ("aaa", "dynauth"): "dynauth",
    ("database",): "database",
    ("dataplane",): "dataplane",
    ("management",): "management",
    ("log",): "log",
}


def rebuild(builder: ConfigBuilder, table: dict, path: tuple[str, ...] = ()) -> None:
    """Feeds ``table`` to the builder, each key through the method of its table."""
    scalars = {
        k: v
        for k, v in table.items()
        if not isinstance(v, dict | list)
        or (isinstance(v, list) and not all(isinstance(e, dict) for e in v))
    }
    if path:
        getattr(builder, TABLES[path])(**scalars)
    for key, value in table.items():
        if isinstance(value, dict):
            rebuild(builder, value, (*path, key))
        elif key not in scalars:
            for element in value:
                getattr(builder, ARRAYS[(*path, key)])(**element)


def test_the_example_configuration_is_rebuilt_key_for_key(tmp_path: Path) -> None:
    example = tomllib.loads(EXAMPLE.read_text())
    builder = ConfigBuilder()
    rebuild(builder, example)
    assert builder.document == example
    assert tomllib.loads(builder.toml()) == example
    assert builder.config() == load_config(EXAMPLE)
    assert load_config(builder.write(tmp_path / "lns.toml")) == load_config(EXAMPLE)


def test_every_table_of_the_configuration_has_a_method() -> None:
    sections = {field.name for field in dataclasses.fields(Config)}
    assert sections == {path[0] for path in TABLES}
    # The nested ones: [[l2tp.lac]], [[aaa.radius]], [aaa.dynauth], [[aaa.dynauth.client]].
    assert {f.name for f in dataclasses.fields(L2tpSection)} >= {"lacs"}
    assert {f.name for f in dataclasses.fields(AaaSection)} >= {"radius", "dynauth"}
    assert {f.name for f in dataclasses.fields(DynauthSection)} >= {"clients"}
    for method in (*TABLES.values(), *ARRAYS.values()):
        assert callable(getattr(ConfigBuilder(), method))


def test_arrays_grow_and_tables_merge() -> None:
    builder = (
        ConfigBuilder()
        .l2tp(listen="127.0.0.1:1701")
        .l2tp(hostname="lns")
        .lac(name="a", peer="10.0.0.0/8", secret="s")
        .lac(name="b", peer="192.0.2.0/24", authenticate=False)
        .dynauth_client(address="127.0.0.1", secret="d")
        .dynauth(listen="127.0.0.1:3799")
    )
    config = builder.config()
    assert (config.l2tp.listen_port, config.l2tp.hostname) == (1701, "lns")
    assert [lac.name for lac in config.l2tp.lacs] == ["a", "b"]
    assert config.aaa.dynauth is not None
    assert [str(c.address) for c in config.aaa.dynauth.clients] == ["127.0.0.1"]


def test_radius_server_and_sqlite_shorthands(tmp_path: Path) -> None:
    server = FreeRadius("radius-secret", "", auth_port=18120, acct_port=18130)
    config = (
        ConfigBuilder()
        .radius_server(server, timeout=0.5)
        .sqlite(tmp_path / "lns.db", migrate_on_start=False)
        .config()
    )
    (radius,) = config.aaa.radius
    assert (str(radius.address), radius.auth_port, radius.acct_port) == ("127.0.0.1", 18120, 18130)
    assert radius.secret.value == b"radius-secret"
    assert radius.timeout == 0.5
    assert config.database.url == f"sqlite:///{tmp_path / 'lns.db'}"
    assert config.database.migrate_on_start is False


def test_a_configuration_the_server_refuses_is_written_as_told(tmp_path: Path) -> None:
    builder = ConfigBuilder().l2tp(hello_interval="often")
    with pytest.raises(ConfigError, match=r"\[l2tp\] hello_interval"):
        builder.config()
    path = builder.write(tmp_path / "lns.toml")
    assert tomllib.loads(path.read_text()) == {"l2tp": {"hello_interval": "often"}}


def test_values_without_a_toml_form_are_named() -> None:
    with pytest.raises(TypeError, match=r"l2tp\.listen: no TOML form for set"):
        toml_text({"l2tp": {"listen": {1}}})


# --- the TOML writer on any document -------------------------------------------------------

KEYS = st.text(min_size=1, max_size=8)
SCALARS = (
    st.text(max_size=12)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.booleans()
)
VALUES = SCALARS | st.lists(SCALARS, max_size=4)


def tables(depth: int) -> st.SearchStrategy[dict]:
    if depth == 0:
        return st.dictionaries(KEYS, VALUES, max_size=4)
    inner = tables(depth - 1)
    return st.dictionaries(
        KEYS, VALUES | inner | st.lists(inner, min_size=1, max_size=3), max_size=4
    )


@settings(max_examples=300, deadline=None)
@given(tables(2))
def test_toml_text_reads_back_as_the_document(document: dict) -> None:
    assert tomllib.loads(toml_text(document)) == document


def test_special_strings_and_floats() -> None:
    document = {
        "s": 'quote " backslash \\ newline \n tab \t nul \x00 del \x7f é 🛰',
        "key with spaces": 1,
        "floats": [1e-05, 0.1, 1e300, -0.0, math.inf, -math.inf],
    }
    assert tomllib.loads(toml_text(document)) == document
    assert math.isnan(tomllib.loads(toml_text({"x": math.nan}))["x"])
