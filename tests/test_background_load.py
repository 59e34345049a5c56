"""The decoder session loads on a worker thread while the audio graph loads and encodes."""

from __future__ import annotations

import threading

import pytest

import edge_runtime.api as api
from conftest import test_clip
from edge_runtime.api import EdgeMoss
from edge_runtime.errors import BundleError


@pytest.fixture(scope="module")
def bundle(tiny_checkpoint, bundle_factory):
    return bundle_factory(tiny_checkpoint, "fp32", "chunked")


def test_first_request_waits_for_the_decoder_and_reports_it(bundle, monkeypatch):
    release = threading.Event()
    real = api.Decoder

    def slow_decoder(*args, **kwargs):
        release.wait(timeout=30)
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "Decoder", slow_decoder)
    model = EdgeMoss(bundle, threads=1)  # returns while the decoder is still loading
    assert model._decoder is None and not model._decoder_job.done()
    audio = model.encode(test_clip(3.0))  # the audio graph works meanwhile
    assert audio.num_tokens > 0
    threading.Timer(0.3, release.set).start()
    result = model.ask(test_clip(3.0), "Transcribe the audio.", max_new_tokens=4)
    assert result.timings["decoder_wait_s"] > 0.1
    assert result.timings["decoder_load_s"] >= result.timings["decoder_wait_s"]
    again = model.ask(test_clip(3.0), "Transcribe the audio.", max_new_tokens=4)
    assert again.timings["decoder_wait_s"] < 0.1 and again.token_ids == result.token_ids


def test_a_decoder_that_fails_to_load_fails_the_first_request(bundle, monkeypatch):
    def broken(*args, **kwargs):
        raise BundleError("decoder graph does not match the model config")

    monkeypatch.setattr(api, "Decoder", broken)
    model = EdgeMoss(bundle, threads=1)
    with pytest.raises(BundleError, match="does not match"):
        model.ask(test_clip(2.0), "Transcribe the audio.", max_new_tokens=2)
