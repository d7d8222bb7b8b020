"""Measurement records (selfvae.runs.records): a stored bound or FID names the weights and images it measured,
in a versioned form read back as written; records from before provenance still match by their step count."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY

from selfvae.config import ModelConfig
from selfvae.models.selfvae import SelfVAE
from selfvae.runs.records import (
    RECORD_VERSION,
    ImagesUsed,
    Provenance,
    WeightsUsed,
    measured_on,
    provenance_of,
    stamp,
    weights_used,
)


def _model(seed: int) -> SelfVAE:
    torch.manual_seed(seed)
    return SelfVAE(ModelConfig(image_shape=(1, 8, 8), transforms="", latent_shape=(2, 2, 2), prior="standard",
                               n_mix=2, q_u=TINY, p_y=TINY, q_z=TINY, p_z=TINY, p_x=TINY))


def test_a_stamped_record_reads_back_and_names_its_weights():
    a, b = _model(0), _model(1)
    wa = weights_used(a, {"steps": 7})
    prov = Provenance(wa, ImagesUsed("mnist", "test", 100, "first"))
    rec = stamp({"fid": 12.5, "steps": 7}, prov)
    assert rec["version"] == RECORD_VERSION and provenance_of(rec) == prov and rec["fid"] == 12.5
    assert measured_on(rec, wa.sha256, 7) and not measured_on(rec, weights_used(b, {}).sha256, 7)  # same steps
    with torch.no_grad():
        next(a.parameters()).add_(1e-3)  # the same model trained a little more: other weights
    assert not measured_on(rec, weights_used(a, {}).sha256, 7)


@pytest.mark.parametrize("steps, other, expected", [(7, 7, True), (7, 8, False), (None, None, False)])
def test_a_record_from_before_provenance_matches_by_its_steps_only(steps, other, expected):
    old = {"fid": 3.0, "steps": steps}  # version 1: no "version", no "provenance"
    assert provenance_of(old) is None
    assert measured_on(old, "anything", other) is expected


def test_weights_used_is_the_state_dicts_digest_whatever_the_memory_format():
    m = _model(0)
    before = weights_used(m, {"steps": 3})
    m.to(memory_format=torch.channels_last)
    assert weights_used(m, {"steps": 3}) == before == WeightsUsed(before.sha256, 3) and len(before.sha256) == 64
