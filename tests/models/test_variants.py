import json

import ml_collections
import pytest

from configs.base import model_config
from vitra_jax.models import variants


def _tiny(**overrides) -> ml_collections.ConfigDict:
    c = model_config()
    c.variant = "tiny"
    c.update(overrides)
    return c


def test_qk_norm_reaches_the_dit():
    assert model_config().qk_norm == "rms"  # the default keeps existing runs unchanged
    assert variants.from_config(_tiny()).dit.qk_norm == "rms"
    cfg = variants.from_config(_tiny(qk_norm="timm_0_9_10", dit_remat=True, repeats=3))
    assert (cfg.dit.qk_norm, cfg.dit.remat, cfg.repeats) == ("timm_0_9_10", True, 3)


def test_config_written_before_qk_norm_means_rms():
    """A run folder's config.json from before the field existed rebuilds the model it trained."""
    old = _tiny().to_dict()
    del old["qk_norm"]
    assert variants.from_config(ml_collections.ConfigDict(json.loads(json.dumps(old)))).dit.qk_norm == "rms"


def test_unknown_qk_norm_names_the_choices():
    with pytest.raises(ValueError, match="unknown qk_norm 'timm'; choose one of 'rms', 'timm_0_9_10'"):
        variants.from_config(_tiny(qk_norm="timm"))
