# BAGEL-7B-MoT (ByteDance-Seed/Bagel): Qwen2.5-7B shapes in both experts
# (14B total, 7B active), the FLUX VAE as latent encoder and SigLIP-so400m/14
# (NaViT, up to 70 x 70 patches) as understanding encoder. The weights of
# everything but the VAE are BAGEL's ema.safetensors, loaded with
# uno.models.external.bagel.load_bagel_checkpoint(model, '<ckpt root>/bagel'); the
# folder is the BAGEL-7B-MoT release (ema.safetensors, ae.safetensors).
model = dict(
    type='UnoModel',
    llm=dict(
        vocab_size=152064,
        hidden_size=3584,
        num_layers=28,
        num_heads=28,
        num_kv_heads=4,
        intermediate_size=18944,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        qkv_bias=True,
        qk_norm=True,
        tie_word_embeddings=False),
    latent_encoder=dict(
        type='AutoencoderKLEncoder',
        config='flux',  # 16 latent channels, downsample 8
        pretrained='{{$UNO_CKPT_ROOT:./checkpoints}}/bagel/ae.safetensors',
        scaling_factor=0.3611,
        shift_factor=0.1159,
        patch_size=2,  # 2 x 2 x 16 = 64-dim tokens of 16 x 16 px
        sample_posterior=True),  # BAGEL samples the posterior
    und_encoder=dict(
        type='SiglipVisionEncoder',
        config=dict(
            hidden_size=1152,
            intermediate_size=4304,
            num_hidden_layers=27,  # select_layer=-2 builds 26, as BAGEL
            num_attention_heads=16,
            patch_size=14,
            image_size=980),  # a 70 x 70 position table
        select_layer=-2,
        from_bagel=True),
    attention=dict(type='sdpa'),
    timestep_scale=1.0,  # BAGEL embeds raw t in [0, 1]
    metaquery=dict(num_queries=0))
