"""Tests of detkit.registry (Registry, build_from_config) and of detkit.modeling's registries."""

from __future__ import annotations

import sys

import pytest

import detkit.modeling
from detkit.config import get_cfg
from detkit.modeling import MATCHER_REGISTRY, Matcher, build_matcher
from detkit.registry import ComponentNotFoundError, Registry, build_from_config

REGISTRY_NAMES = [
    "META_ARCH",
    "BACKBONE",
    "ANCHOR_GENERATOR",
    "BOX_CODER",
    "MATCHER",
    "SAMPLER",
    "PROPOSAL_GENERATOR",
    "RPN_HEAD",
    "ROI_HEADS",
    "ROI_BOX_HEAD",
    "ROI_POOLER",
]


class TinyComponent:
    """Records what it was built with."""

    def __init__(self, *, low: float, high: float, shape: object = None):
        self.low, self.high, self.shape = low, high, shape

    @classmethod
    def from_config(cls, cfg, node, input_shape=None) -> dict:
        low, high = node.IOU_THRESHOLDS
        return {"low": low, "high": high, "shape": input_shape}


class ExtraKeyComponent(TinyComponent):
    """from_config returns a key that __init__ does not take."""

    @classmethod
    def from_config(cls, cfg, node, input_shape=None) -> dict:
        return {"low": 0.0, "high": 1.0, "bogus_key": 3}


class NoFromConfig:
    pass


@pytest.fixture
def registry() -> Registry:
    reg = Registry("TEST")
    for cls in (TinyComponent, ExtraKeyComponent, NoFromConfig):
        reg.register(cls)
    return reg


def matcher_cfg(name: str):
    cfg = get_cfg()
    cfg.MODEL.RPN.MATCHER.NAME = name
    return cfg


# --------------------------------------------------------------------------------------------
# Look-ups
# --------------------------------------------------------------------------------------------


def test_lookup_returns_the_registered_class(registry):
    assert registry.get("TinyComponent") is TinyComponent
    assert registry.names() == ["ExtraKeyComponent", "NoFromConfig", "TinyComponent"]


def test_failed_lookup_lists_registered_names_and_mentions_imports(registry):
    with pytest.raises(ComponentNotFoundError) as excinfo:
        registry.get("Unrelated")
    assert isinstance(excinfo.value, KeyError)
    msg = str(excinfo.value)
    assert "No component named 'Unrelated' in the TEST registry" in msg
    assert "Registered: ExtraKeyComponent, NoFromConfig, TinyComponent." in msg
    assert "IMPORTS" in msg
    assert "Did you mean" not in msg  # nothing is close to "Unrelated"


def test_close_name_gets_a_did_you_mean_hint(registry):
    with pytest.raises(ComponentNotFoundError) as excinfo:
        registry.get("TinyComponnet")
    assert "Did you mean 'TinyComponent'" in str(excinfo.value)  # the closest first


def test_failed_lookup_in_an_empty_registry():
    with pytest.raises(ComponentNotFoundError) as excinfo:
        Registry("EMPTY").get("Anything")
    msg = str(excinfo.value)
    assert "in the EMPTY registry" in msg and "Registered: (none)" in msg


# --------------------------------------------------------------------------------------------
# build_from_config
# --------------------------------------------------------------------------------------------


def test_build_reads_name_and_calls_from_config(registry):
    cfg = matcher_cfg("TinyComponent")
    obj = build_from_config(registry, cfg, cfg.MODEL.RPN.MATCHER, input_shape="shape-token")
    assert type(obj) is TinyComponent
    assert (obj.low, obj.high, obj.shape) == (0.3, 0.7, "shape-token")  # the RPN defaults


def test_build_uses_the_node_it_is_given(registry):
    cfg = get_cfg()
    cfg.MODEL.ROI_HEADS.MATCHER.NAME = "TinyComponent"
    obj = build_from_config(registry, cfg, cfg.MODEL.ROI_HEADS.MATCHER)
    assert (obj.low, obj.high) == (0.0, 0.5)  # ROI_HEADS.MATCHER thresholds, not the RPN's


def test_build_applies_overrides(registry):
    cfg = matcher_cfg("TinyComponent")
    obj = build_from_config(registry, cfg, cfg.MODEL.RPN.MATCHER, high=0.9, shape="given")
    assert (obj.low, obj.high, obj.shape) == (0.3, 0.9, "given")


def test_build_wrong_type_names_the_key_path_and_the_required_type(registry):
    cfg = matcher_cfg("TinyComponent")
    with pytest.raises(TypeError) as excinfo:
        build_from_config(registry, cfg, cfg.MODEL.RPN.MATCHER, expected_type=Matcher)
    msg = str(excinfo.value)
    assert "MODEL.RPN.MATCHER.NAME = 'TinyComponent'" in msg
    assert "requires a Matcher" in msg


def test_build_wrong_type_with_a_tuple_of_types(registry):
    cfg = matcher_cfg("TinyComponent")
    with pytest.raises(TypeError) as excinfo:
        build_from_config(registry, cfg, cfg.MODEL.RPN.MATCHER, expected_type=(int, str))
    assert "requires a int or str" in str(excinfo.value)


def test_build_type_error_in_init_names_the_key_and_the_kwargs(registry):
    cfg = get_cfg()
    cfg.MODEL.ROI_HEADS.MATCHER.NAME = "ExtraKeyComponent"
    with pytest.raises(TypeError) as excinfo:
        build_from_config(registry, cfg, cfg.MODEL.ROI_HEADS.MATCHER)
    msg = str(excinfo.value)
    assert "MODEL.ROI_HEADS.MATCHER.NAME = 'ExtraKeyComponent'" in msg
    assert "bogus_key" in msg  # the original error names it
    assert "['bogus_key', 'high', 'low']" in msg  # the keys from_config returned
    assert isinstance(excinfo.value.__cause__, TypeError)


def test_build_unknown_name_names_the_key(registry):
    cfg = matcher_cfg("TinyComponnet")
    with pytest.raises(ComponentNotFoundError) as excinfo:
        build_from_config(registry, cfg, cfg.MODEL.RPN.MATCHER)
    msg = str(excinfo.value)
    assert msg.startswith("MODEL.RPN.MATCHER.NAME: No component named 'TinyComponnet'")
    assert "Did you mean 'TinyComponent'" in msg


def test_build_without_from_config_is_a_clear_error(registry):
    cfg = matcher_cfg("NoFromConfig")
    with pytest.raises(TypeError) as excinfo:
        build_from_config(registry, cfg, cfg.MODEL.RPN.MATCHER)
    msg = str(excinfo.value)
    assert "MODEL.RPN.MATCHER.NAME = 'NoFromConfig'" in msg
    assert "from_config" in msg


def test_build_from_a_node_without_name_names_the_node(registry):
    cfg = get_cfg()
    with pytest.raises(KeyError) as excinfo:
        build_from_config(registry, cfg, cfg.MODEL.RPN)
    assert "Config node MODEL.RPN has no NAME" in str(excinfo.value)


def test_build_imports_cfg_imports_first(plugin_module):
    mod = plugin_module(
        """
        from detkit.modeling import MATCHER_REGISTRY, Matcher

        @MATCHER_REGISTRY.register()
        class PluginTestMatcher(Matcher):
            def __init__(self, *, labels):
                self.labels = labels

            @classmethod
            def from_config(cls, cfg, node, input_shape=None):
                return {"labels": list(node.IOU_LABELS)}

            def __call__(self, match_quality_matrix):
                raise NotImplementedError
        """
    )
    cfg = matcher_cfg("PluginTestMatcher")
    cfg.IMPORTS = [mod]  # set directly: nothing has imported the module yet
    assert mod not in sys.modules
    matcher = build_matcher(cfg, cfg.MODEL.RPN.MATCHER)
    assert type(matcher).__module__ == mod
    assert matcher.labels == [0, -1, 1]
    assert "PluginTestMatcher" in MATCHER_REGISTRY.names()


def test_build_matcher_checks_the_matcher_interface(plugin_module):
    mod = plugin_module(
        """
        from detkit.modeling import MATCHER_REGISTRY

        @MATCHER_REGISTRY.register()
        class NotAMatcherTest:
            def __init__(self):
                pass

            @classmethod
            def from_config(cls, cfg, node, input_shape=None):
                return {}
        """
    )
    cfg = matcher_cfg("NotAMatcherTest")
    cfg.IMPORTS = [mod]
    with pytest.raises(TypeError) as excinfo:
        build_matcher(cfg, cfg.MODEL.RPN.MATCHER)
    msg = str(excinfo.value)
    assert "MODEL.RPN.MATCHER.NAME = 'NotAMatcherTest'" in msg
    assert "MATCHER registry requires a Matcher" in msg


# --------------------------------------------------------------------------------------------
# detkit.modeling's registries
# --------------------------------------------------------------------------------------------


def test_all_registries_are_the_eleven_of_the_design():
    assert list(detkit.modeling.ALL_REGISTRIES) == REGISTRY_NAMES


@pytest.mark.parametrize("name", REGISTRY_NAMES)
def test_registry_is_exposed_and_documents_its_interface(name):
    registry = getattr(detkit.modeling, f"{name}_REGISTRY")
    assert isinstance(registry, Registry)
    assert registry is detkit.modeling.ALL_REGISTRIES[name]
    assert registry._name == name
    doc = registry.__doc__ or ""
    assert doc != Registry.__doc__  # its own docstring, not the class's
    assert len(doc.split()) >= 20
    assert "A member is" in doc  # what its members are...
    assert "returns" in doc.lower() or "->" in doc  # ...and what they give back
