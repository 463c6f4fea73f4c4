"""Checkpoint loading: official training format, other layouts, and clear errors for bad files."""
from __future__ import annotations

import argparse
import logging
import pickle

import pytest
import torch

from pipeline.model.checkpoint import guess_variant, load_weights
from pipeline.core.errors import CheckpointError
from pipeline.model.sgformer import create_model


class NotAllowed:  # a class a safe unpickler must refuse
    def __init__(self):
        self.x = 1


def _perturbed(model, delta):
    return {k: v + delta for k, v in model.state_dict().items()}


def official_checkpoint(model, ema_delta=0.5):
    """The layout upstream's CheckpointSaver writes (docs/sgformer.md §10), made with our own model."""
    params = list(model.parameters())
    opt = torch.optim.AdamW(
        [{"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
         {"params": [p for p in params if p.ndim > 1], "weight_decay": 0.05}], lr=1e-3)
    for g in opt.param_groups:
        g["initial_lr"] = 1e-3
    return {
        "epoch": 299,
        "arch": "sgformer_s",
        "state_dict": model.state_dict(),
        "optimizer": opt.state_dict(),
        "version": 2,
        "args": argparse.Namespace(model="sgformer_s", lr=1e-3, amp=True, model_ema=True, drop_path=0.1),
        "amp_scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000, "_growth_tracker": 11},
        "state_dict_ema": _perturbed(model, ema_delta),
        "metric": 83.2,
    }


@pytest.fixture(scope="module")
def source():
    return create_model("tiny-test", seed=11)


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_official_format_round_trip_prefers_ema(tmp_path, source, caplog):
    path = tmp_path / "model_best.pth.tar"
    ckpt = official_checkpoint(source)
    torch.save(ckpt, path)
    with caplog.at_level(logging.INFO, logger="pipeline.model.checkpoint"):
        model = create_model("tiny-test", checkpoint=path)
    assert _same(model.state_dict(), ckpt["state_dict_ema"])
    assert "state_dict_ema" in caplog.text


def test_official_variant_s_loads_strictly(tmp_path):
    src = create_model("s", seed=1)
    path = tmp_path / "last.pth.tar"
    torch.save(official_checkpoint(src, ema_delta=0.0), path)
    model = create_model("s", checkpoint=path)
    assert _same(model.state_dict(), src.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), src(x))


@pytest.mark.parametrize("layout", ["bare", "model", "module_prefix", "state_dict_only"])
def test_other_layouts(tmp_path, source, layout):
    sd = _perturbed(source, 0.25)
    obj = {
        "bare": sd,
        "model": {"model": sd, "epoch": 3},
        "module_prefix": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
        "state_dict_only": {"state_dict": sd, "args": argparse.Namespace(model="x")},
    }[layout]
    path = tmp_path / f"{layout}.pth"
    torch.save(obj, path)
    model = create_model("tiny-test", checkpoint=path)
    assert _same(model.state_dict(), sd)


def test_448_model_resamples_pos_embed(tmp_path, source):
    path = tmp_path / "ckpt.pth"
    torch.save(source.state_dict(), path)
    model = create_model("tiny-test", img_size=448, checkpoint=path)
    assert model.pos_embed.shape == (1, 112 * 112, 16)
    assert torch.equal(model.block1[0].attn.q1.weight, source.block1[0].attn.q1.weight)
    # The values: the 56x56 grid (row-major tokens, channels last) resampled bicubically to 112x112, row for row.
    grid = source.pos_embed.detach().reshape(1, 56, 56, 16).permute(0, 3, 1, 2)
    want = torch.nn.functional.interpolate(grid, size=(112, 112), mode="bicubic", align_corners=False)
    want = want.permute(0, 2, 3, 1).reshape(1, 112 * 112, 16)
    assert torch.allclose(model.pos_embed.detach(), want, atol=1e-6)
    transposed = want.reshape(1, 112, 112, 16).transpose(1, 2).reshape(1, 112 * 112, 16)
    assert not torch.allclose(model.pos_embed.detach(), transposed, atol=1e-3)  # the check sees a transposed grid


def test_missing_keys(tmp_path, source):
    sd = source.state_dict()
    del sd["head.weight"]
    torch.save(sd, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match=r"1 missing keys \(e.g. \['head.weight'\]\)"):
        create_model("tiny-test", checkpoint=tmp_path / "c.pth")


def test_wrong_shape(tmp_path, source):
    sd = source.state_dict()
    sd["head.weight"] = torch.zeros(1000, 32)  # a head of another width cannot be a fine-tuned head of this model
    torch.save(sd, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match=r"head.weight is \[1000, 32\], the model expects \[1000, 64\]"):
        create_model("tiny-test", checkpoint=tmp_path / "c.pth")


def test_wrong_variant_is_named(tmp_path):
    torch.save(create_model("s").state_dict(), tmp_path / "s.pth")
    assert guess_variant(torch.load(tmp_path / "s.pth")) == "s"
    with pytest.raises(CheckpointError, match="looks like variant 's', not 'm'"):
        create_model("m", checkpoint=tmp_path / "s.pth")


def test_truncated_file(tmp_path, source):
    path = tmp_path / "c.pth"
    torch.save(official_checkpoint(source), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt or not a PyTorch checkpoint"):
        create_model("tiny-test", checkpoint=path)


def test_not_a_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        create_model("tiny-test", checkpoint=tmp_path / "nope.pth")


def test_garbage_file(tmp_path):
    path = tmp_path / "c.pth"
    path.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="is corrupt"):
        create_model("tiny-test", checkpoint=path)


def test_unsafe_pickle_is_refused_with_opt_in_hint(tmp_path, source):
    path = tmp_path / "c.pth"
    torch.save({"state_dict": source.state_dict(), "extra": NotAllowed()}, path)
    with pytest.raises(CheckpointError, match="not on the safe list.*Unsupported global.*NotAllowed.*trust_pickle=True"):
        create_model("tiny-test", checkpoint=path)
    model = create_model("tiny-test", checkpoint=path, trust_pickle=True)
    assert _same(model.state_dict(), source.state_dict())


def test_non_checkpoint_pickles(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list, not a checkpoint"):
        create_model("tiny-test", checkpoint=tmp_path / "list.pth")
    raw = tmp_path / "list.pkl"  # a plain pickle (not torch's zip format) is refused by the safe unpickler
    with open(raw, "wb") as f:
        pickle.dump({"a": NotAllowed()}, f)
    with pytest.raises(CheckpointError, match="not on the safe list"):
        create_model("tiny-test", checkpoint=raw)
    torch.save({"epoch": 1, "metric": 0.5}, tmp_path / "meta.pth")
    with pytest.raises(CheckpointError, match="dict without model weights"):
        create_model("tiny-test", checkpoint=tmp_path / "meta.pth")
