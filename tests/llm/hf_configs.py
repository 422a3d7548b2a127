"""Tiny ``--config`` overrides for each hf: model type the tests build (seconds on a 2-core CPU).

``TINY_LLAMA``: 2 layers, d 64, 4 heads of 16 (head_dim derived), 2 KV heads (GQA), MLP 128, vocab 1000.
"""

from __future__ import annotations

TINY_LLAMA = ("num_hidden_layers=2,hidden_size=64,num_attention_heads=4,num_key_value_heads=2,"
              "intermediate_size=128,vocab_size=1000")

TINY = {
    "gpt2": "n_layer=2,n_embd=64,n_head=4,vocab_size=1000,bos_token_id=0,eos_token_id=0",
    "llama": TINY_LLAMA,
    "mistral": TINY_LLAMA + ",sliding_window=None",
    "qwen2": TINY_LLAMA,
    "bert": "num_hidden_layers=2,hidden_size=64,num_attention_heads=4,intermediate_size=128,vocab_size=1000",
    "t5": "num_layers=2,d_model=64,d_ff=128,num_heads=4,d_kv=16,vocab_size=1000",
    "vit": "num_hidden_layers=2,hidden_size=64,num_attention_heads=4,intermediate_size=128,image_size=32,patch_size=8",
    "whisper": ("encoder_layers=1,decoder_layers=1,d_model=64,encoder_attention_heads=4,decoder_attention_heads=4,"
                "encoder_ffn_dim=128,decoder_ffn_dim=128,vocab_size=1000,max_source_positions=1500,pad_token_id=0,"
                "bos_token_id=0,eos_token_id=0,decoder_start_token_id=0"),
}
