"""External weight formats, in one place: Hugging Face transformers LLM
checkpoints (:mod:`.hf_keys` maps their key names, :mod:`.pretrained`
loads them into the und and gen experts) and BAGEL's released MoT
checkpoint (:mod:`.bagel`); both report what they loaded in one
:class:`~.pretrained.LoadReport`. uno's own checkpoints are
:mod:`uno.engine.checkpoint`'s."""
