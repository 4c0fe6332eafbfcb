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


def test_set_values_take_the_field_type():
    cfg = resolve_config("toy", overrides=parse_set(["train.lr=1e-3", "method.pgd_eps=8/255", "method.sigma=null"]))
    assert cfg.train.lr == 0.001 and cfg.method.pgd_eps == pytest.approx(8 / 255) and cfg.method.sigma is None
    with pytest.raises(ConfigError, match="train.epochs must be of type int"):
        resolve_config("toy", overrides=parse_set(["train.epochs=abc"]))


def test_bench_named_in_a_config_file_selects_its_preset(tmp_path):
    (tmp_path / "c.yaml").write_text("data: {bench: cub200}\ntrain: {epochs: 2}\n")
    cfg = resolve_config("toy", config_file=tmp_path / "c.yaml")
    assert cfg.data.bench == "cub200" and cfg.model.arch != "toy-clip" and cfg.train.epochs == 2
    via_set = resolve_config("toy", overrides=parse_set(["data.bench=cub200"]))
    assert via_set.method.proto_scale is None  # nothing of the toy preset leaks in


@pytest.mark.parametrize(
    "setting",
    [
        "method.migrate=gauss",
        "method.sigma=0",
        "method.tsgr_k=0",
        "method.tau=0",
        "train.batch_size=0",
        "method.k_seed=0",
        "lora.rank=0",
        "method.beta=-0.5",
        "method.fusion=probs method.beta=1.5",
        "method.tsgr_mode=star",
        "method.prototype_space=joint",
        "train.optimizer=rmsprop",
        "method.tsgr_tau=0",
    ],
)
def test_invalid_settings_fail_before_training(setting):
    from segpcl.config import validate

    with pytest.raises(ConfigError):
        validate(resolve_config("toy", overrides=parse_set(setting.split())))
