"""The embedded SmolLM2 model: the integration tests split from tests/unit/probes/test_api.py."""

from __future__ import annotations

import pytest

from interp.model.loading import load_model
from probes.concepts import load_concept
from probes.directions import probe_layers
from probes.encode import encode_texts


@pytest.mark.integration
def test_stereotype_probe_beats_its_controls_on_the_embedded_model():
    model = load_model("smollm2")
    data = load_concept("stereotype")
    encodings = encode_texts(model, data.texts(), position="last")
    probe = probe_layers(encodings, data, method="probe", seed=0)
    best = probe.table.set_index("layer").loc[probe.val_layer]  # the headline layer
    assert best["acc"] >= 0.75
    assert best["acc"] - best["shuffled_acc"] >= 0.2
    assert best["acc_lo"] > best["shuffled_acc"]
    # and the control that can fail: at seed 0 the probe (0.89 at layer 15) beats a bag of
    # words (0.78) on the same test statements, McNemar p = 0.011
    assert probe.surface.beats and probe.surface.baseline == "bow"
