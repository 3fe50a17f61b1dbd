"""KV-cache variants of the reference, for the mastery checks (autograder/checks/test_mastery.py).

The base, CACHED, is the reference with a correct key/value cache: RotaryPositionalEmbedding
takes a position `offset`, CausalSelfAttention.forward(x, mask=None, cache=None) fills a per-layer
dict with its rotated keys and values, the model threads one dict per block, and
generate(..., use_cache=True) runs the prompt once and then one position per new token. Every
mutant here is CACHED plus one realistic bug of a student's cache; it must lose the mastery
points only, with the diagnosis phrase in the mastery test's message. The alternatives are other
correct caches (another API, another place for the cache) and must pass every mastery test.
"""

from variants import ALTERNATIVES, ATTENTION_BODY, GENERATE, Variant, mutant, alternative

# -- the base: the reference with a correct cache ----------------------------------------------

ROPE_SIGNATURE = ("    def forward(self, q: torch.Tensor, k: torch.Tensor):\n"
                  "        # q, k: (batch, heads, seq, head_dim) -> same shapes, rotated by position\n"
                  "        seq_len = q.shape[-2]\n"
                  "        cos = self.cos_cached[:seq_len].to(q.dtype)  # (seq, head_dim)\n"
                  "        sin = self.sin_cached[:seq_len].to(q.dtype)\n")
ROPE_WITH_OFFSET = ("    def forward(self, q: torch.Tensor, k: torch.Tensor, offset: int = 0):\n"
                    "        # q, k: (batch, heads, seq, head_dim), at positions offset, offset + 1, ...\n"
                    "        seq_len = q.shape[-2]\n"
                    "        cos = self.cos_cached[offset:offset + seq_len].to(q.dtype)  # (seq, head_dim)\n"
                    "        sin = self.sin_cached[offset:offset + seq_len].to(q.dtype)\n")

CACHED_ROPE = "        q, k = self.rope(q, k, offset=past)\n"
CACHE_CONCAT = ("        if cache is not None:\n"
                "            if past:\n"
                "                k = torch.cat([cache[\"k\"], k], dim=2)\n"
                "                v = torch.cat([cache[\"v\"], v], dim=2)\n"
                "            cache[\"k\"], cache[\"v\"] = k, v\n")
CACHED_ATTENTION = ('''    def forward(self, x: torch.Tensor, mask: torch.Tensor = None, cache: dict = None) -> torch.Tensor:
        """x: (batch, seq, dim) -> (batch, seq, dim). cache: None, or this layer's dict of the
        rotated keys and values of the earlier positions (filled in place when generating)."""
        batch, seq_len, dim = x.shape
        q, k, v = self.qkv_proj(x).split(self.dim, dim=2)
        q = q.view(batch, seq_len, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.view(batch, seq_len, self.num_heads, self.head_dim).transpose(1, 2)
        v = v.view(batch, seq_len, self.num_heads, self.head_dim).transpose(1, 2)
        past = cache["k"].shape[2] if cache else 0
''' + CACHED_ROPE + CACHE_CONCAT + '''        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (b, h, s, past + s)
        if mask is None:
            mask = torch.ones(seq_len, past + seq_len, device=x.device).tril(past)
        scores = scores.masked_fill(mask == 0, float("-inf"))
        weights = self.attn_dropout(F.softmax(scores, dim=-1))
        out = (weights @ v).transpose(1, 2).contiguous().view(batch, seq_len, dim)
        return self.resid_dropout(self.out_proj(out))
        # END SOLUTION


''')
BLOCK = ("    def forward(self, x: torch.Tensor, mask: torch.Tensor = None) -> torch.Tensor:\n"
         "        x = x + self.attn(self.norm1(x), mask)\n")
CACHED_BLOCK = ("    def forward(self, x: torch.Tensor, mask: torch.Tensor = None, cache: dict = None) -> torch.Tensor:\n"
                "        x = x + self.attn(self.norm1(x), mask, cache)\n")
MODEL_HEAD = ("    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor = None):\n")
CACHED_MODEL_HEAD = ("    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor = None, caches: list = None):\n")
MODEL_MASK = ("        seq_len = input_ids.shape[1]\n"
              "        if seq_len > self.max_seq_len:\n"
              "            raise ValueError(f\"sequence length {seq_len} exceeds max_seq_len {self.max_seq_len}\")\n"
              "        mask = torch.tril(torch.ones(seq_len, seq_len, device=input_ids.device))\n")
CACHED_MASK_LINE = "        mask = torch.ones(seq_len, past + seq_len, device=input_ids.device).tril(past)\n"
CACHED_MODEL_MASK = ("        seq_len = input_ids.shape[1]\n"
                     "        past = caches[0][\"k\"].shape[2] if caches and caches[0] else 0\n"
                     "        if past + seq_len > self.max_seq_len:\n"
                     "            raise ValueError(f\"sequence length {past + seq_len} exceeds max_seq_len \"\n"
                     "                             f\"{self.max_seq_len}\")\n" + CACHED_MASK_LINE)
MODEL_BLOCKS = "        for block in self.blocks:\n            x = block(x, mask)\n"
CACHED_MODEL_BLOCKS = ("        for index, block in enumerate(self.blocks):\n"
                       "            x = block(x, mask, caches[index] if caches is not None else None)\n")
CACHED_CONTEXT = ("            if not use_cache:\n"
                  "                context = input_ids[:, -self.max_seq_len:]\n"
                  "            elif caches is None:  # the prompt, once: it fills every layer's cache\n"
                  "                caches, context = [{} for _ in self.blocks], input_ids\n"
                  "            else:  # one new position per step\n"
                  "                context = input_ids[:, -1:]\n"
                  "            logits, _ = self(context, caches=caches)\n")
TOP_K = ("            if top_k is not None:\n"
         "                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]\n"
         "                logits = logits.masked_fill(logits < kth, float(\"-inf\"))\n")
CACHED_GENERATE = ('''    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int = None, use_cache: bool = False) -> torch.Tensor:
        """Sample max_new_tokens tokens after input_ids (batch, seq); returns (batch, seq + new).
        use_cache: keep every layer's keys and values, so each new token costs one position
        (the prompt plus the new tokens must fit in max_seq_len)."""
        caches = None
        for _ in range(max_new_tokens):
''' + CACHED_CONTEXT + '''            logits = logits[:, -1, :] / temperature  # (batch, vocab)
''' + TOP_K + '''            next_id = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            input_ids = torch.cat([input_ids, next_id], dim=1)
        return input_ids


''')
ATTENTION_SOLUTION = ATTENTION_BODY  # from forward's def through "# END SOLUTION" and the blank lines

BASE_EDITS = (
    (ROPE_SIGNATURE, ROPE_WITH_OFFSET),
    (ATTENTION_SOLUTION, CACHED_ATTENTION),
    (BLOCK, CACHED_BLOCK),
    (MODEL_HEAD, CACHED_MODEL_HEAD),
    (MODEL_MASK, CACHED_MODEL_MASK),
    (MODEL_BLOCKS, CACHED_MODEL_BLOCKS),
    (GENERATE, CACHED_GENERATE),
)

CACHED = Variant("kv_cache", BASE_EDITS)


def cached_mutant(name, edits, diagnosis, core=False):
    """CACHED with one more bug: loses mastery only (nothing downstream: the cache is not trained)."""
    return mutant(name, BASE_EDITS + tuple(edits), "mastery", diagnosis, may_lose="", core=core)


def cached_alternative(name, edits, core=False):
    return alternative(name, BASE_EDITS + tuple(edits), core=core)


# -- the five wrong kinds of the issue ----------------------------------------------------------

MASTERY_MUTANTS = [
    # "With a cache there is one query per step, nothing to hide": true for the steps, not for
    # the prompt, whose first pass then attends to later prompt tokens.
    cached_mutant("kv_cache_prefill_without_causal_mask",
                  [(CACHED_MASK_LINE, "        mask = torch.tril(torch.ones(seq_len, seq_len, device=input_ids.device)) "
                                      "if caches is None else torch.ones(seq_len, past + seq_len)\n")],
                  "prompt pass is not causal", core=True),
    # RoPE at positions 0..seq-1 of the new input: every new token is rotated at position 0.
    cached_mutant("kv_cache_rope_from_position_zero",
                  [(CACHED_ROPE, "        q, k = self.rope(q, k)\n")],
                  "rotated at position 0"),
    # The cache keeps raw keys and RoPE runs after the concatenation: all keys then get the new
    # query's rotation, so the steps lose every relative position.
    cached_mutant("kv_cache_keys_rotated_after_concatenation",
                  [(CACHED_ROPE + CACHE_CONCAT, CACHE_CONCAT + CACHED_ROPE)],
                  "rotated after they are concatenated"),
    # The first step already feeds only the last token: the cache never sees the prompt.
    cached_mutant("kv_cache_only_last_prompt_token_embedded",
                  [("            elif caches is None:  # the prompt, once: it fills every layer's cache\n"
                    "                caches, context = [{} for _ in self.blocks], input_ids\n",
                    "            elif caches is None:\n"
                    "                caches, context = [{} for _ in self.blocks], input_ids[:, -1:]\n")],
                  "embedded only 1 of the"),
    # The cached branch has its own top-k filter, whose threshold lost its column dimension: it
    # broadcasts only for batch 1.
    cached_mutant("kv_cache_crashes_with_top_k",
                  [(TOP_K, "            if top_k is not None and use_cache:\n"
                           "                kth = torch.topk(logits, top_k).values[:, -1]\n"
                           "                logits = logits.masked_fill(logits < kth, float(\"-inf\"))\n"
                           "            elif top_k is not None:\n"
                           "                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]\n"
                           "                logits = logits.masked_fill(logits < kth, float(\"-inf\"))\n")],
                  "top_k"),
]

# -- how the cache is held, and where new tokens sit (issue 19): the message names the contract
# point that broke, from this run's evidence

NEW_CACHES = "                caches, context = [{} for _ in self.blocks], input_ids\n"
MASTERY_MUTANTS += [
    # [{}] * n repeats one dict: the second layer reads the first one's keys as its past.
    cached_mutant("kv_cache_shared_across_layers",
                  [(NEW_CACHES, NEW_CACHES.replace("[{} for _ in self.blocks]", "[{}] * len(self.blocks)"))],
                  "every attention layer gets the same cache object"),
    # The caches live on the model and the next generate call continues from them.
    cached_mutant("kv_cache_not_reset_between_calls",
                  [("        caches = None\n        for _ in range(max_new_tokens):\n",
                    "        caches = getattr(self, \"_caches\", None) if use_cache else None\n"
                    "        for _ in range(max_new_tokens):\n"),
                   (NEW_CACHES, NEW_CACHES + "                self._caches = caches\n")],
                  "the cache is not reset between calls"),
    # Each new token rotated one position too far (the prompt's positions right).
    cached_mutant("kv_cache_new_positions_one_ahead",
                  [(CACHED_ROPE, "        q, k = self.rope(q, k, offset=past + 1 if past else 0)\n")],
                  "RoPE positions are wrong in the cached steps"),
]

# -- correct caches of other shapes ----------------------------------------------------------------

PRESENT_ATTENTION_RETURN = "        return self.resid_dropout(self.out_proj(out)), (k, v)\n        # END SOLUTION\n"

MASTERY_ALTERNATIVES = [
    # generate() itself always caches; RoPE's offset applied inside attention by slicing the
    # provided module's tables (variants.py's generate_with_kv_cache, kept in the main table).
    next(v for v in ALTERNATIVES if v.name == "generate_with_kv_cache"),
    # Attention returns (out, present_kv) and takes past_kv; the model threads them.
    cached_alternative("kv_cache_attention_returns_present", [
        ("    def forward(self, x: torch.Tensor, mask: torch.Tensor = None, cache: dict = None) -> torch.Tensor:\n"
         "        \"\"\"x: (batch, seq, dim)",
         "    def forward(self, x: torch.Tensor, mask: torch.Tensor = None, past_kv: tuple = None):\n"
         "        \"\"\"x: (batch, seq, dim)"),
        ("        past = cache[\"k\"].shape[2] if cache else 0\n",
         "        past = past_kv[0].shape[2] if past_kv is not None else 0\n"),
        (CACHE_CONCAT, "        if past_kv is not None:\n"
                       "            k, v = torch.cat([past_kv[0], k], dim=2), torch.cat([past_kv[1], v], dim=2)\n"),
        ("        return self.resid_dropout(self.out_proj(out))\n        # END SOLUTION\n",
         PRESENT_ATTENTION_RETURN),
        ("        x = x + self.attn(self.norm1(x), mask, cache)\n",
         "        attended, present = self.attn(self.norm1(x), mask, cache)\n"
         "        x = x + attended\n"),
        ("        x = x + self.ff(self.norm2(x))\n        return x\n",
         "        x = x + self.ff(self.norm2(x))\n        return x, present\n"),
        ("        past = caches[0][\"k\"].shape[2] if caches and caches[0] else 0\n",
         "        past = caches[0][0].shape[2] if caches and caches[0] is not None else 0\n"),
        (CACHED_MODEL_BLOCKS,
         "        presents = []\n"
         "        for index, block in enumerate(self.blocks):\n"
         "            x, present = block(x, mask, caches[index] if caches else None)\n"
         "            presents.append(present)\n"
         "        self.presents = presents\n"),
        ("                caches, context = [{} for _ in self.blocks], input_ids\n",
         "                caches, context = [], input_ids\n"),
        ("            logits, _ = self(context, caches=caches)\n",
         "            logits, _ = self(context, caches=caches or None)\n"
         "            if use_cache:\n"
         "                caches = self.presents\n"),
    ]),
    # The template's generate() stays as it is; the cache lives in generate_cached().
    cached_alternative("kv_cache_separate_method", [
        ("    @torch.no_grad()\n    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, "
         "temperature: float = 1.0,\n                 top_k: int = None, use_cache: bool = False)",
         GENERATE.rstrip("\n") + "\n\n    @torch.no_grad()\n    def generate_cached(self, input_ids: "
         "torch.Tensor, max_new_tokens: int, temperature: float = 1.0,\n                 top_k: int = None, "
         "use_cache: bool = True)"),
    ]),
]
