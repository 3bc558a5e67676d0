"""The ``[launch]`` section: strict values, one-line errors naming the dotted key."""

from __future__ import annotations

import pytest

from heur.core.config import validate_run
from heur.core.errors import ConfigError


@pytest.mark.parametrize(
    "launch, key, message",
    [
        ({"launcher": "pbs"}, "launch.launcher", "expected 'local' or 'slurm', got 'pbs'"),
        ({"nproc": 0}, "launch.nproc", "expected a number >= 1"),
        ({"nproc": True}, "launch.nproc", "not a boolean"),
        ({"slurm": {"time": "90 minutes"}}, "launch.slurm.time", "expected minutes > 0 or sbatch's MM:SS"),
        ({"slurm": {"time": "1:2"}}, "launch.slurm.time", "expected minutes > 0 or sbatch's MM:SS"),
        ({"slurm": {"time": 0}}, "launch.slurm.time", "expected minutes > 0"),
        ({"slurm": {"mem": "16GB"}}, "launch.slurm.mem", "expected a size like '16G'"),
        ({"slurm": {"gpus_per_run": -1}}, "launch.slurm.gpus_per_run", "expected a number >= 0"),
        ({"slurm": {"sbatch": {"partition": "x"}}}, "launch.slurm.sbatch", "'partition' is set by heur"),
        ({"slurm": {"sbatch": {"Bad Name": "x"}}}, "launch.slurm.sbatch", "expected sbatch long option names"),
        ({"slurm": {"sbatch": {"exclusive": False}}}, "launch.slurm.sbatch", "'exclusive' = false"),
        ({"slurm": {"queue": "gpu"}}, "launch.slurm.queue", "unknown key"),
    ],
)
def test_bad_launch_values_name_the_key(launch, key, message):
    with pytest.raises(ConfigError) as e:
        validate_run({"launch": launch}, "p.toml")
    assert e.value.key == key and message in str(e.value), str(e.value)
    assert str(e.value).startswith(f"p.toml: {key}: ")


@pytest.mark.parametrize(
    "time, minutes",
    [
        (90, 90),
        ("90", 90),
        ("1:30", 2),  # sbatch: minutes:seconds (rounded up to whole minutes)
        ("01:30:00", 90),  # hours:minutes:seconds
        ("01:30:01", 91),
        ("2-0", 2 * 24 * 60),  # days-hours
        ("1-02:03", 24 * 60 + 2 * 60 + 3),  # days-hours:minutes
        ("1-02:03:04", 24 * 60 + 2 * 60 + 3 + 1),  # days-hours:minutes:seconds (4 s: one more minute)
    ],
)
def test_slurm_time_in_minutes_as_sbatch_reads_it(time, minutes):
    # the formats of sbatch's man page (--time); submitit's timeout_min is whole minutes
    assert validate_run({"launch": {"slurm": {"time": time}}}).launch.slurm.time_minutes() == minutes


def test_no_launch_section_leaves_config_toml_as_it_was():
    assert "launch" not in validate_run({}).to_dict()  # a local run's config.toml gains nothing
