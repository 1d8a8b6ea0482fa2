"""Command-line overrides Hydra would reject with exit 1 and no alternative: exit 2, the valid choices,
a did-you-mean; a +key regner never reads gets a warning (regner/config/overrides.py)."""

import pytest

from regner.config.overrides import check_overrides, known_keys
from regner.config.paths import config_dir
from regner.errors import ConfigError, UserError

from .test_cli import regner


@pytest.mark.parametrize("args,error,says", [
    (["regularizer=doesnotexist"], ConfigError, "expected one of awp, fgm, gp, mean_teacher, noise, none, pgd, rdrop"),
    (["regularizer=rdorp"], ConfigError, "Did you mean rdrop?"),
    (["-m", "regularizer=rdrop,nope"], ConfigError, "regularizer='nope'"),
    (["data=cluner"], ConfigError, "Did you mean cluener?"),
    (["foo=1"], UserError, "unknown key foo"),
    (["trainer.foo=1"], UserError, "the keys at that level: trainer.adam_beta1"),
    (["regulariser=rdrop"], UserError, "did you mean regularizer?"),
    (["trainer.bacth_size=4"], UserError, "did you mean trainer.batch_size"),
])
def test_unknown_options_and_keys_are_config_errors_with_choices(args, error, says):
    with pytest.raises(error, match=None) as err:
        check_overrides(args)
    assert says in str(err.value)


def test_pretrain_keys_are_checked_against_their_own_config():
    with pytest.raises(UserError, match="unknown key pretrain.bogus_key"):
        check_overrides(["pretrain.bogus_key=1"], "pretraining")
    assert check_overrides(["pretrain.lr=0.001", "pretrain=zh-mini"], "pretraining") == []


def test_valid_overrides_pass_and_unread_added_keys_warn():
    assert check_overrides(["regularizer=rdrop", "alpha=1,4", "-m", "trainer.batch_size=4", "hydra.run.dir=x"]) == []
    assert check_overrides(["+data.encoding=gb18030"]) == []  # validation reads it: not an unused key
    (warning,) = check_overrides(["+foo=1"])
    assert "+foo=1 adds a key regner does not read" in warning
    (warning,) = check_overrides(["+trainer.bacth_size=4"])
    assert "did you mean trainer.batch_size" in warning
    assert {"trainer.batch_size", "data.encoding", "regularizer.alpha", "pretrain.corpus"} <= known_keys(
        __import__("pathlib").Path(config_dir()))


def test_through_the_cli_exit_2_before_hydra_and_nothing_written(tmp_path):
    for args, says in ((["regularizer=doesnotexist"], "expected one of"), (["foo=1"], "unknown key foo"),
                       (["trainer.foo=1"], "unknown key trainer.foo")):
        result = regner("train", *args, cwd=tmp_path)
        assert result.returncode == 2 and says in result.stderr and "Traceback" not in result.stderr
        assert "HYDRA_FULL_ERROR" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    sweep = regner("sweep", "regularizer=rdrop,nope", cwd=tmp_path)
    assert sweep.returncode == 2 and "regularizer='nope'" in sweep.stderr
    assert list(tmp_path.iterdir()) == []
