"""checkpoint: checkpoints are tensors and plain data only; a foreign one, or one of another model version, is
refused in one line."""
import numpy as np
import pytest
import torch

from backfill import checkpoint
from backfill.model import ModelConfig


class _Evil:
    """Unpickling this opens (creates) a file: what a foreign checkpoint could do."""
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_checkpoint_with_pickled_code_is_refused(tmp_path):
    path, marker = tmp_path / "foreign.pt", tmp_path / "pwned"
    torch.save({"model": {}, "payload": _Evil(marker)}, path)
    with pytest.raises(checkpoint.CheckpointError, match=r"^refused checkpoint .*foreign\.pt: .*(builtins|io)\.open") as e:
        checkpoint.load(path)
    assert "\n" not in str(e.value)
    assert not marker.exists()
    with pytest.raises(checkpoint.CheckpointError, match="foreign.pt"):
        checkpoint.load_model(path)
    assert not marker.exists()


def test_a_checkpoint_of_another_model_version_is_one_line(tmp_path):
    cfg = ModelConfig(5, 5).to_dict()
    for name, ck in (("config", {"model": {}, "model_config": {**cfg, "n_feat": 3}}),          # a field now derived
                     ("state", {"model": {"dec_lstm.weight_ih_l0": torch.zeros(1)}, "model_config": cfg})):
        checkpoint.save(tmp_path / f"{name}.pt", ck)
        with pytest.raises(checkpoint.CheckpointError, match="does not fit this code's model") as e:
            checkpoint.load_model(tmp_path / f"{name}.pt")
        assert "\n" not in str(e.value)


def test_plain_turns_numpy_into_python():
    x = checkpoint._plain({np.int64(5): [np.float32(0.5), (np.float64(1.0), None)], "a": np.arange(3), "s": "x"})
    assert x == {5: [0.5, (1.0, None)], "a": [0, 1, 2], "s": "x"}
    assert type(list(x)[0]) is int and type(x[5][0]) is float and isinstance(x[5][1], tuple)
