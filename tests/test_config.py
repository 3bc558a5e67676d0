import pytest
import tomllib

from heur.core.config import dumps_toml, expand, load_experiment, parse_value
from heur.core.errors import ConfigError

BASE = {"name": "x", "optim": {"lr": 0.1}, "train": {"epochs": 2}}


def test_defaults_and_override_types():
    exp = expand(BASE, ["optim.lr=0.2", "train.batch_size=64", "model.name=mlp", "optim.betas=[0.8, 0.9]"])
    (cfg,) = exp.runs.values()
    assert cfg.optim.lr == 0.2 and cfg.train.batch_size == 64 and cfg.model.name == "mlp"
    assert cfg.optim.betas == (0.8, 0.9)


def test_parse_value_is_toml_literal_or_bare_string():
    assert parse_value("1") == 1 and parse_value("1.5") == 1.5 and parse_value("true") is True
    assert parse_value("adam") == "adam" and parse_value('"a b"') == "a b" and parse_value("[1, 2]") == [1, 2]


def test_variants_times_grid_cartesian_product_and_names():
    raw = dict(
        BASE,
        variant=[{"name": "a", "set": {"optim.name": "adam"}}, {"name": "b", "set": {}}],
        grid={"optim.lr": [0.1, 0.2, 0.4], "train.batch_size": [16, 32]},
    )
    exp = expand(raw, [])
    assert len(exp.runs) == 2 * 3 * 2
    assert exp.runs["a_lr=0.4_batch_size=32"].optim.name == "adam"
    assert exp.runs["a_lr=0.4_batch_size=32"].optim.lr == 0.4
    assert exp.runs["b_lr=0.1_batch_size=16"].optim.name == "sgd"
    assert exp.runs["b_lr=0.1_batch_size=16"].train.batch_size == 16


def test_override_pins_grid_axis_and_beats_variant():
    raw = dict(BASE, variant=[{"name": "a", "set": {"optim.lr": 0.5}}], grid={"optim.lr": [0.1, 0.2]})
    exp = expand(raw, ["optim.lr=0.3"])
    assert list(exp.runs) == ["a"] and exp.runs["a"].optim.lr == 0.3


def test_grid_label_uses_full_key_when_last_parts_collide():
    raw = dict(BASE, grid={"schedule.warmup.epochs": [1], "train.epochs": [3]})
    (name,) = expand(raw, []).runs
    assert name == "schedule.warmup.epochs=1_train.epochs=3"


@pytest.mark.parametrize(
    "override, key, expect",
    [
        (["optim.lrr=1"], "optim.lrr", "did you mean 'optim.lr'"),
        (["optim.lr=-1"], "optim.lr", "expected a number > 0"),
        (["optim.name=adamm"], "optim.name", "'sgd', 'adam', 'adamw' or 'gi_adam'"),
        (["train.batch_size=abc"], "train.batch_size", "expected"),
        (["device=gpu"], "device", "expected auto, cpu, cuda, cuda:N or mps"),
        (["trian.epochs=1"], "trian.epochs", "did you mean 'train.epochs'"),
        (["optim.lr"], "--set", "KEY=VALUE"),
    ],
)
def test_bad_overrides_name_the_key(override, key, expect):
    with pytest.raises(ConfigError) as e:
        expand(BASE, override, file="p.toml")
    assert e.value.key == key and expect in str(e.value)


def test_unknown_key_in_file_is_reported_with_file_and_suggestion(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text('name = "x"\n[optim]\nlearning_rate = 0.1\n')
    with pytest.raises(ConfigError) as e:
        load_experiment(p)
    assert str(e.value).startswith(f"{p}: optim.learning_rate: unknown key")


def test_unknown_section_suggests(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text('name = "x"\n[optimizer]\nlr = 0.1\n')
    with pytest.raises(ConfigError, match="did you mean 'optim'"):
        load_experiment(p)


def test_malformed_toml_reports_line(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text('name = "x"\n[optim]\nlr = = 0.1\n')
    with pytest.raises(ConfigError) as e:
        load_experiment(p)
    assert str(e.value).startswith(f"{p}:3: malformed TOML")


def test_variant_errors_name_the_variant(tmp_path):
    raw = dict(BASE, variant=[{"name": "lb", "set": {"train.batch_size": 0}}])
    with pytest.raises(ConfigError) as e:
        expand(raw, [])
    assert e.value.key == "train.batch_size" and "variant 'lb'" in str(e.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="no such preset file"):
        load_experiment("nope/none.toml")


def test_toml_writer_roundtrips_resolved_configs():
    raw = dict(
        BASE,
        schedule={"name": "cosine", "warmup": {"epochs": 1.5}},
        variant=[{"name": "a", "set": {"optim.lr": 0.5, "schedule.warmup.shape": "cosine"}}],
    )
    exp = expand(raw, [])
    for cfg in exp.runs.values():
        assert tomllib.loads(dumps_toml(cfg.to_dict())) == cfg.to_dict()
    assert tomllib.loads(dumps_toml(exp.resolved)) == exp.resolved


# --------------------------------------------------------------------------- strict values (issue 17)


@pytest.mark.parametrize(
    "toml_value, key, expect",
    [
        ("optim.lr = inf", "optim.lr", "expected a finite number"),
        ("optim.lr = 1e999", "optim.lr", "expected a finite number"),  # TOML reads it as inf
        ("optim.lr = nan", "optim.lr", "expected a finite number"),
        ('optim.lr = "0.02"', "optim.lr", "expected a number, not a string"),
        ("train.batch_size = true", "train.batch_size", "expected an integer, not a boolean"),
        ("train.batch_size = 12.5", "train.batch_size", "expected integer"),
        ("data.augment = 1", "data.augment", "expected boolean"),
        ("train.epochs = 1e300", "train.epochs", "expected a number <= 1000000"),
        ("train.diverge_loss = inf", "train.diverge_loss", "expected a finite number"),
        ("seed = 99999999999999999999", "seed", "expected a number <= 4294967295"),
        ("seed = 4294967296", "seed", "expected a number <= 4294967295"),
        ("seed = -1", "seed", "expected a number >= 0"),
        ('seed = "1"', "seed", "expected an integer, not a string"),
    ],
)
def test_strict_values_are_refused_with_the_key(tmp_path, toml_value, key, expect):
    dotted, _, value = toml_value.partition(" = ")
    section, _, leaf = dotted.rpartition(".")
    body = f'name = "x"\n[{section}]\n{leaf} = {value}\n' if section else f'name = "x"\n{leaf} = {value}\n'
    p = tmp_path / "p.toml"
    p.write_text(body)
    with pytest.raises(ConfigError) as e:
        load_experiment(p)
    assert e.value.key == key and expect in e.value.message and e.value.file == str(p)


def test_integers_are_floats_and_lists_are_tuples():
    """What strict types still take: 1 for a float, a TOML list for betas, the biggest seed."""
    (cfg,) = expand(dict(BASE, seed=2**32 - 1, optim={"lr": 1, "betas": [0.5, 0.75]}), []).runs.values()
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float) and cfg.optim.betas == (0.5, 0.75)
    assert cfg.seed == 2**32 - 1
    # a run's own config (as a checkpoint keeps it, JSON lists) validates again
    from heur.core.config import validate_run

    assert validate_run(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "vname, expect",
    [
        ("..", "is a path part"),
        (".", "is a path part"),
        ("experiment.toml", "one of the experiment's own files"),
        ("summary.json", "one of the experiment's own files"),
        ("Summary.JSON", "one of the experiment's own files"),
        ("supervisor.json", "one of the experiment's own files"),
        ("x" * 201, "expected at most 200"),
        ("é" * 101, "expected at most 200"),  # bytes, as the filesystem counts
        ("///", "expected letters or digits"),
    ],
)
def test_variant_names_that_cannot_be_run_directories_are_refused(vname, expect):
    raw = dict(BASE, variant=[{"name": "ok", "set": {}}, {"name": vname, "set": {}}])
    with pytest.raises(ConfigError) as e:
        expand(raw, [])
    assert e.value.key == "variant[1].name" and expect in e.value.message


@pytest.mark.parametrize("name", ["..", "summary.json", "y" * 201])
def test_preset_names_that_cannot_be_run_directories_are_refused(name):
    with pytest.raises(ConfigError) as e:
        expand(dict(BASE, name=name), [])
    assert e.value.key == "name"


def test_unicode_names_are_kept():
    raw = dict(BASE, variant=[{"name": "lr grand é", "set": {}}, {"name": "学习率", "set": {}}])
    assert list(expand(raw, []).runs) == ["lr-grand-é", "学习率"]
    assert list(expand(dict(BASE, name="démo"), []).runs) == ["démo"]


def test_every_preset_validates_under_strict_types():
    from pathlib import Path

    presets = sorted((Path(__file__).parent.parent / "presets").rglob("*.toml"))
    assert len(presets) >= 8
    for p in presets:
        assert load_experiment(p).runs


def test_the_longest_names_allowed_make_real_directories(tmp_path):
    from heur.core.runs import create_experiment, run_dirs

    raw = dict(BASE, name="n" * 200, variant=[{"name": "é" * 100, "set": {}}])
    exp_dir = create_experiment(expand(raw, []), tmp_path)
    (rd,) = run_dirs(exp_dir)
    assert rd.name == "é" * 100 and (rd / "config.toml").is_file() and exp_dir.name.startswith("n" * 200)
