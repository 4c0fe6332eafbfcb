"""One table says what `--resume` may change: the CLI, the engine and the error message all read it."""

from segpcl.cli.train import train
from segpcl.engine.resume import RESUMABLE_OPTIONS, RESUME_CONTROLS, defines_run, resume_refusal


def test_resumable_options_set_keys_that_do_not_define_the_run():
    for name, (option, key) in RESUMABLE_OPTIONS.items():
        assert not defines_run(key), (name, key)
        assert any(option in p.opts for p in train.params), f"{option} is not an option of segpcl train"


def test_defining_keys():
    for key in ("method.name", "model.arch", "model.pretrained", "train.seed", "data.class_order", "lora.rank"):
        assert defines_run(key), key
    for key in ("train.lr", "data.data_root", "data.max_tasks", "model.precision"):
        assert not defines_run(key), key


def test_the_refusal_names_exactly_the_resumable_options():
    message = resume_refusal(["--method"])
    assert message.startswith("--method cannot change when resuming")
    for option, _ in RESUMABLE_OPTIONS.values():
        assert option in message


def test_the_controls_are_options_of_train():
    names = {p.name for p in train.params}
    assert set(RESUME_CONTROLS) <= names, set(RESUME_CONTROLS) - names
