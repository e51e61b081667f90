"""engine.registry: the one registry every extensible table of the project uses."""

from __future__ import annotations

import sys

import pytest

from engine.registry import Registry, UnknownEntryError


class NoSuchThing(Exception):
    def __init__(self, key, known):
        super().__init__(f"{key} not in {known}")
        self.key, self.known = key, known


def test_decorator_registers_under_every_key_and_returns_the_object():
    table: Registry[str, object] = Registry("thing")

    @table.register("a", "b")
    def thing():
        return 1

    assert thing() == 1
    assert table.get("a") is thing and table.get("b") is thing
    assert table.keys() == ["a", "b"] and len(table) == 2 and "a" in table


def test_a_key_registered_twice_is_refused():
    table: Registry[str, int] = Registry("runtime")
    table.add("cpu", 1)
    with pytest.raises(ValueError, match="runtime 'cpu' is registered twice"):
        table.add("cpu", 2)
    assert table.get("cpu") == 1


def test_unknown_key_names_the_known_ones_or_raises_the_tables_own_error():
    plain: Registry[str, int] = Registry("attack")
    plain.add("pgd", 1)
    with pytest.raises(UnknownEntryError, match=r"unknown attack 'fgsm' \(known: pgd\)"):
        plain.get("fgsm")
    own: Registry[str, int] = Registry("attack", unknown=NoSuchThing)
    own.add("pgd", 1)
    with pytest.raises(NoSuchThing) as info:
        own.get("fgsm")
    assert info.value.known == ["pgd"]
    assert own.find("fgsm") is None and own.find(["unhashable"]) is None


def test_normalized_keys_and_removal():
    schemes: Registry[str, str] = Registry("scheme", normalize=str.lower)
    schemes.register("RTSP")("opener")
    assert schemes.get("rtsp") == "opener" and "Rtsp" in schemes
    schemes.remove("rTsP")
    assert "rtsp" not in schemes
    schemes.remove("rtsp")  # gone already: fine


def test_keys_keep_registration_order_and_filter_by_pattern():
    table: Registry[str, int] = Registry("model")
    for i, name in enumerate(["xception", "efficientnet_b4st", "xception_tiny"]):
        table.add(name, i)
    assert table.keys() == ["xception", "efficientnet_b4st", "xception_tiny"]
    assert table.keys("xception*") == ["xception", "xception_tiny"]
    assert [k for k, _ in table.items()] == list(table)


def test_the_projects_tables_are_registries():
    from engine.convert import FORMATS
    from engine.faces.base import FACE_DETECTORS
    from engine.models.registry import MODELS
    from engine.runtime.base import RUNTIMES
    from engine.sources.registry import SCHEMES
    from engine.xai.guided import GUIDED_ACTIVATIONS
    from training.attacks.base import ATTACKS
    from training.defenses import DEFENSES

    for table in (FORMATS, FACE_DETECTORS, MODELS, RUNTIMES, SCHEMES, GUIDED_ACTIVATIONS):
        assert isinstance(table, Registry) and len(table) > 0
    for table in (ATTACKS, DEFENSES):
        assert isinstance(table, Registry) and len(table) > 0


def test_provider_modules_are_imported_on_first_lookup_not_before(tmp_path, monkeypatch):
    """A table names the heavy modules that fill it; reading its neighbours stays cheap."""
    (tmp_path / "veritas_t_table.py").write_text(
        "from engine.registry import Registry\n"
        "TABLE = Registry('thing', providers=('veritas_t_plugin',))\n"
    )
    (tmp_path / "veritas_t_plugin.py").write_text(
        "from veritas_t_table import TABLE\nTABLE.add('bundled', 2)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("veritas_t_table", "veritas_t_plugin"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    from veritas_t_table import TABLE  # type: ignore[import-not-found]

    TABLE.add("early", 1)  # registering does not load the providers
    assert "veritas_t_plugin" not in sys.modules
    assert TABLE.keys() == ["early", "bundled"]  # the first listing does, once
    assert "veritas_t_plugin" in sys.modules
    assert TABLE.get("bundled") == 2 and len(TABLE) == 2
