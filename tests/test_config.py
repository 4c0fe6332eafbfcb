import pytest

from segpcl.config import RunConfig, config_from_dict, parse_set, preset_names, resolve_config
from segpcl.errors import ConfigError


def test_overrides_win_over_preset():
    cfg = resolve_config("toy", overrides=parse_set(["train.lr=0.01", "method.beta=0.25"]))
    assert cfg.train.lr == 0.01
    assert cfg.method.beta == 0.25
    assert cfg.data.bench == "toy"


def test_unknown_key_names_the_known_ones():
    with pytest.raises(ConfigError, match="known keys here"):
        resolve_config("toy", overrides={"train": {"learning_rate": 1}})


def test_set_needs_key_value():
    with pytest.raises(ConfigError):
        parse_set(["train.lr"])


def test_round_trip_through_dict(tmp_path):
    from segpcl.config import write_config

    cfg = resolve_config("toy", overrides={"method": {"name": "lora"}})
    write_config(cfg, tmp_path / "c.yaml")
    import yaml

    again = config_from_dict(yaml.safe_load((tmp_path / "c.yaml").read_text()))
    assert again == cfg


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_resolves(name):
    cfg = resolve_config(name)
    assert isinstance(cfg, RunConfig)
    assert cfg.data.bench == name
