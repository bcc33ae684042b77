"""Write a tiny, randomly initialized GPT-2 (a Hugging Face `save_pretrained` folder) to try
`methodo evaluate-lm` without downloading a model. Needs the llm extra (transformers, tokenizers).

    python examples/tiny_gpt2.py tiny-gpt2
    methodo evaluate-lm tiny-gpt2 --tasks methodo_science_mc

2 layers, 32 wide, 64 positions, a byte-level BPE of 300 tokens trained on 20 topics of the Python
documentation that ships with CPython: its scores are near chance, which is the point of a check.
"""

import sys

import torch
import transformers
from pydoc_data.topics import topics
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers


def main(out: str) -> None:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(list(topics.values())[:20], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    eot = "<|endoftext|>"
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eot, eos_token=eot, unk_token=eot,
                                                pad_token=eot)
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=len(fast), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                  bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(out)
    fast.save_pretrained(out)
    print(f"wrote {out}: GPT-2, {cfg.n_layer} layers, {cfg.n_embd} wide, vocabulary {len(fast)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tiny-gpt2")
