"""Variants of the reference: one-bug mutants and correct alternatives, made by exact edits.

Each variant is a list of (old, new) replacements applied to reference/backbone.py; every `old`
must occur exactly once, so a variant breaks loudly if the reference changes under it.

A mutant names the categories that must lose points (`loses`), those that may lose points
because they sit downstream of the bug (`may_lose`, each justified where it is declared), and
the diagnosis: a phrase that a failing test of a `loses` category must print, naming the bug.
Every other category must keep full marks.

A correct alternative loses nothing and must score 100; when the grader has to adapt to its API,
`note` is a phrase of the adaptation note the grader must print.

`core` variants run in the default `pytest tests`; the rest are marked slow (`pytest -m slow`).
"""

from dataclasses import dataclass

from grading import REFERENCE


@dataclass(frozen=True)
class Variant:
    name: str
    edits: tuple
    loses: frozenset = frozenset()
    may_lose: frozenset = frozenset()
    diagnosis: str = ""
    note: str = ""
    core: bool = False

    def source(self) -> str:
        with open(REFERENCE) as file:
            text = file.read()
        for old, new in self.edits:
            count = text.count(old)
            if count != 1:
                raise ValueError(f"variant {self.name}: {old!r} occurs {count} times in the reference")
            text = text.replace(old, new)
        return text


# Why a mutant may lose points outside its own category. The convergence test trains the
# student's whole model with the student's train_epoch, so every bug in the model or in the
# optimisation is upstream of it.
DOWNSTREAM = "convergence"


def mutant(name, edits, loses, diagnosis, may_lose=DOWNSTREAM, core=False):
    return Variant(name, tuple(edits), frozenset(loses.split()), frozenset(may_lose.split()),
                   diagnosis=diagnosis, core=core)


def alternative(name, edits, note="", core=False):
    return Variant(name, tuple(edits), note=note, core=core)


# -- anchors in the reference ------------------------------------------------------------------

RMS = "        rms = torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (..., 1)\n"
NORMED = "        return x / rms * self.scale\n"
SCALE = "        self.scale = nn.Parameter(torch.ones(dim))  # learnable gain, shape (dim,)\n"
ATTENTION_INIT = "    def __init__(self, dim: int, num_heads: int, dropout: float = 0.1):\n"
ROPE_INIT = "        self.rope = RotaryPositionalEmbedding(self.head_dim)\n"
ATTENTION_FORWARD = ("    def forward(self, x: torch.Tensor, mask: torch.Tensor = None) -> "
                     "torch.Tensor:\n        \"\"\"x: (batch, seq, dim)")
SPLIT = "        q, k, v = self.qkv_proj(x).split(self.dim, dim=2)  # 3 x (batch, seq, dim)\n"
HEADS = ("        q = q.view(batch, seq_len, self.num_heads, self.head_dim).transpose(1, 2)  # (b, h, s, hd)\n"
         "        k = k.view(batch, seq_len, self.num_heads, self.head_dim).transpose(1, 2)\n"
         "        v = v.view(batch, seq_len, self.num_heads, self.head_dim).transpose(1, 2)\n")
ROPE = "        q, k = self.rope(q, k)\n"
SCORES = "        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (b, h, s, s)\n"
OWN_MASK = ("        if mask is None:\n"
            "            mask = torch.tril(torch.ones(seq_len, seq_len, device=x.device))\n")
FILL = '        scores = scores.masked_fill(mask == 0, float("-inf"))\n'
SOFTMAX = "        weights = self.attn_dropout(F.softmax(scores, dim=-1))\n"
COMBINE = "        out = weights @ v  # (b, h, s, hd)\n"
MERGE = "        out = out.transpose(1, 2).contiguous().view(batch, seq_len, dim)\n"
PROJECT = "        return self.resid_dropout(self.out_proj(out))\n"
BLOCK_CALL = "        x = x + self.attn(self.norm1(x), mask)\n"
INV_FREQ = "        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))  # (dim/2,)\n"
ROTATE = ("        q_rot = q * cos + self.rotate_half(q) * sin\n"
          "        k_rot = k * cos + self.rotate_half(k) * sin\n")
QKV_INIT = "        self.qkv_proj = nn.Linear(dim, 3 * dim, bias=False)  # rows: [W_q; W_k; W_v]\n"
OUT_INIT = "        self.out_proj = nn.Linear(dim, dim, bias=False)\n"
EPS_INIT = "        self.eps = eps\n"
ATTENTION_CORE = SCORES + OWN_MASK + FILL + SOFTMAX + "\n" + COMBINE
ROPE_FORWARD = ("    def forward(self, q: torch.Tensor, k: torch.Tensor):\n"
                "        # q, k: (batch, heads, seq, head_dim) -> same shapes, rotated by position\n"
                "        seq_len = q.shape[-2]\n"
                "        cos = self.cos_cached[:seq_len].to(q.dtype)  # (seq, head_dim)\n"
                "        sin = self.sin_cached[:seq_len].to(q.dtype)\n" + ROTATE
                + "        return q_rot, k_rot\n")
# The provided RoPE module rewritten to another API: one tensor at a time, or (q, k, extra) with
# an offset keyword. The attention tests' stand-in answers the same call as the student's.
ROPE_ONE_TENSOR = [(ROPE_FORWARD, "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
                                  "        cos = self.cos_cached[:x.shape[-2]].to(x.dtype)\n"
                                  "        sin = self.sin_cached[:x.shape[-2]].to(x.dtype)\n"
                                  "        return x * cos + self.rotate_half(x) * sin\n"),
                   (ROPE, "        q, k = self.rope(q), self.rope(k)\n")]
ROPE_WITH_EXTRAS = [(ROPE_FORWARD, ROPE_FORWARD.replace("k: torch.Tensor):", "k: torch.Tensor, offset: int = 0):")
                     .replace("[:seq_len]", "[offset:offset + seq_len]")
                     .replace("return q_rot, k_rot", "return q_rot, k_rot, cos")),
                    (ROPE, "        q, k, _cos = self.rope(q, k, offset=0)\n")]
MODEL_RETURN = "        return logits, loss\n"
MODEL_LOSS = ("            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), "
              "targets.reshape(-1))\n")
GENERATE_CALL = "            logits, _ = self(context)\n"
EVALUATE_CALL = "        _, loss = model(actions[:, :-1], actions[:, 1:])\n"
TRAIN_MODE = "    model.train()\n"
SHIFT = "        inputs, targets = actions[:, :-1], actions[:, 1:]  # (batch, seq - 1) each\n"
ZERO_GRAD = "        optimizer.zero_grad()\n"
TRAIN_LOSS = "        _, loss = model(inputs, targets)\n"
BACKWARD = "        loss.backward()\n"
CLIP = "        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)\n"
STEP = "        optimizer.step()\n"
TRAIN_RETURN = "    return total_loss / max(num_batches, 1)\n    # END SOLUTION"
TRAIN_SIGNATURE = ("def train_epoch(model: nn.Module, dataloader, optimizer: torch.optim.Optimizer,\n"
                   "                device: torch.device, epoch: int) -> float:\n")
MAIN_GUARD = 'if __name__ == "__main__":\n    main()\n'


MUTANTS = [
    # -- rmsnorm ----------------------------------------------------------------------------------
    mutant("rmsnorm_layernorm", [(RMS, "        x = x - x.mean(dim=-1, keepdim=True)\n" + RMS)],
           "rmsnorm", "matches LayerNorm", core=True),
    mutant("rmsnorm_eps_outside_sqrt",
           [(RMS, "        rms = torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True)) + self.eps\n")],
           "rmsnorm", "eps added outside the square root"),
    mutant("rmsnorm_no_eps", [(RMS, "        rms = torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True))\n")],
           "rmsnorm", "RMSNorm without eps"),
    mutant("rmsnorm_sequence_axis",
           [(RMS, "        rms = torch.sqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)\n")],
           "rmsnorm", "normalising over the wrong dimension"),
    mutant("rmsnorm_std", [(RMS, "        rms = torch.sqrt(x.var(dim=-1, keepdim=True) + self.eps)\n")],
           "rmsnorm", "standard deviation instead of the root mean square"),
    mutant("rmsnorm_no_scale", [(NORMED, "        return x / rms\n")],
           "rmsnorm", "without the learnable scale"),
    mutant("rmsnorm_scale_not_a_parameter",
           [(SCALE, "        self.scale = torch.ones(dim)\n")],
           "rmsnorm", "must be an nn.Parameter"),
    mutant("rmsnorm_mean_abs",
           [(RMS, "        rms = x.abs().mean(dim=-1, keepdim=True) + self.eps\n")],
           "rmsnorm", "dividing by mean(|x|)"),
    # A wrong RMSNorm whose block passes it a second argument: torch.nn.RMSNorm cannot stand in
    # for it in the model-level causality check, which then says so and runs the student's own
    # (per position, so still causal): rmsnorm only (issue 19).
    mutant("rmsnorm_layernorm_called_with_extra_argument",
           [(RMS, "        x = x - x.mean(dim=-1, keepdim=True)\n" + RMS),
            ("    def forward(self, x: torch.Tensor) -> torch.Tensor:\n        # x: (..., dim)",
             "    def forward(self, x: torch.Tensor, residual: torch.Tensor = None) -> torch.Tensor:\n        # x: (..., dim)"),
            (BLOCK_CALL, "        x = x + self.attn(self.norm1(x, None), mask)\n")],
           "rmsnorm", "matches LayerNorm"),
    # Gemma's parametrisation: the gain starts at zeros and multiplies as (1 + scale).
    mutant("rmsnorm_one_plus_scale",
           [(SCALE, SCALE.replace("torch.ones(dim)", "torch.zeros(dim)")),
            (NORMED, "        return x / rms * (1 + self.scale)\n")],
           "rmsnorm", "applied as (1 + scale)"),
    # eps left at a default whatever the constructor is given: hard-coded in forward, in
    # __init__, or nn.RMSNorm's functional form called without it (torch.finfo(float32).eps).
    mutant("rmsnorm_eps_hardcoded_in_forward",
           [(RMS, RMS.replace("self.eps", "1e-5"))],
           "rmsnorm", "eps fixed at 1e-05 whatever eps"),
    mutant("rmsnorm_eps_hardcoded_in_init", [(EPS_INIT, "        self.eps = 1e-8\n")],
           "rmsnorm", "eps fixed at 1e-08 whatever eps"),
    mutant("rmsnorm_f_rms_norm_without_eps",
           [(RMS + NORMED, "        return F.rms_norm(x, (x.shape[-1],), self.scale)\n")],
           "rmsnorm", "without it they use torch.finfo(dtype).eps"),

    # -- causal_mask ------------------------------------------------------------------------------
    mutant("causal_no_mask", [(FILL, "")], "causal_mask", "no mask at all", core=True),
    # Attention left as a stub that passes its input through: causal by doing nothing, so its
    # causal and attention properties earn nothing (the reference's attention is never run).
    mutant("attention_stub_returns_input", [(SPLIT, "        return x\n" + SPLIT)],
           "causal_mask rope attention", "a forward that returns its input, zeros or a constant"),
    mutant("causal_mask_after_softmax",
           [(FILL + SOFTMAX, "        weights = F.softmax(scores, dim=-1).masked_fill(mask == 0, 0.0)\n"
                             "        weights = self.attn_dropout(weights)\n")],
           "causal_mask", "zeroing the attention weights after the softmax"),
    # A token that cannot see itself: row 0 has no key left, its softmax is NaN.
    mutant("causal_hides_diagonal",
           [(OWN_MASK, OWN_MASK.replace("device=x.device))", "device=x.device), diagonal=-1)"))],
           "causal_mask", "hides the diagonal"),
    mutant("causal_triu",
           [(OWN_MASK, OWN_MASK.replace("torch.tril", "torch.triu"))],
           "causal_mask", "torch.triu where torch.tril belongs"),
    mutant("causal_masked_fill_discarded",
           [(FILL, '        scores.masked_fill(mask == 0, float("-inf"))\n')],
           "causal_mask", "masked_fill is not in-place"),
    mutant("causal_mask_only_in_train_mode",
           [(FILL, "        if self.training:\n    " + FILL)],
           "causal_mask", "applied only when self.training is True"),
    mutant("causal_mask_only_in_eval_mode",
           [(FILL, "        if not self.training:\n    " + FILL)],
           "causal_mask", "applied only when self.training is False"),
    # A mask buffer built for max_seq_len, sliced one row down: position t sees token t + 1.
    mutant("causal_max_len_mask_sliced_wrongly",
           [(ATTENTION_INIT, ATTENTION_INIT.replace("dropout: float = 0.1", "dropout: float = 0.1, "
                                                    "max_seq_len: int = 512")),
            (ROPE_INIT, ROPE_INIT + "        self.register_buffer(\"causal_mask\", torch.tril("
                                    "torch.ones(max_seq_len, max_seq_len)), persistent=False)\n"),
            (OWN_MASK, "        mask = self.causal_mask[1:seq_len + 1, :seq_len]\n")],
           "causal_mask", "also see the next token"),

    # -- attention --------------------------------------------------------------------------------
    mutant("attention_no_scaling",
           [(SCORES, "        scores = q @ k.transpose(-2, -1)\n")],
           "attention", "not divided by sqrt(head_dim)", core=True),
    # Heads merged as if the layout were sequence-first, (seq, batch, heads, head_dim): with one
    # sequence it is right; with several, each output row reads another sequence's values. The
    # causal checks compare perturbed copies within a batch, so they measure such a leak again
    # one sequence at a time and leave it to attention's batch test.
    mutant("attention_heads_merged_sequence_first",
           [(MERGE, "        out = out.permute(2, 0, 1, 3).contiguous().view(batch, seq_len, dim)\n")],
           "attention", "the sequences of a batch are mixed"),
    # The softmax over the queries mixes information from later queries into earlier outputs:
    # the future leaks, which the causal_mask checks rightly see.
    mutant("attention_softmax_over_queries",
           [(SOFTMAX, SOFTMAX.replace("dim=-1", "dim=-2"))],
           "attention", "softmax taken over the queries", may_lose="causal_mask " + DOWNSTREAM),
    # Reshaping (b, s, d) straight to (b, h, s, hd) mixes positions into the heads, so outputs
    # depend on later tokens (causal_mask) and the rope probe reads garbled weights.
    mutant("attention_heads_without_transpose",
           [(HEADS, "".join(f"        {t} = {t}.reshape(batch, self.num_heads, seq_len, self.head_dim)\n"
                            for t in "qkv")),
            (MERGE, "        out = out.contiguous().view(batch, seq_len, dim)\n")],
           "attention", "heads split by reshaping straight", may_lose="causal_mask " + DOWNSTREAM),
    # Merging without transposing back mixes positions too: a later position's values reach
    # earlier outputs (causal_mask).
    mutant("attention_merge_without_transpose",
           [(MERGE, "        out = out.reshape(batch, seq_len, dim)\n")],
           "attention", "heads merged without transposing back", may_lose="causal_mask " + DOWNSTREAM),
    mutant("attention_split_k_q_v",
           [(SPLIT, SPLIT.replace("q, k, v =", "k, q, v ="))],
           "attention", "split in the order k, q, v"),
    mutant("attention_no_out_proj", [(PROJECT, "        return self.resid_dropout(out)\n")],
           "attention", "out_proj not applied"),
    mutant("attention_scaled_by_sqrt_dim",
           [(SCORES, SCORES.replace("self.head_dim", "self.dim"))],
           "attention", "divided by sqrt(dim), the model dim"),
    # Dropout on whatever self.training is: evaluation and generation are random. The checks that
    # compare numbers build with dropout 0 and see nothing; the eval-mode check sees it.
    mutant("dropout_functional_without_training_flag",
           [(SOFTMAX, "        weights = F.dropout(F.softmax(scores, dim=-1), p=self.attn_dropout.p)\n")],
           "attention", "dropout applied whatever self.training is"),
    mutant("dropout_sdpa_dropout_p_always",
           [(ROPE_INIT, ROPE_INIT + "        self.dropout = dropout\n"),
            (ATTENTION_CORE, "        out = F.scaled_dot_product_attention(q, k, v, is_causal=mask is None, "
                             "attn_mask=None if mask is None else mask.bool(), dropout_p=self.dropout)\n")],
           "attention", "dropout applied whatever self.training is"),
    mutant("dropout_module_built_in_forward",
           [(SOFTMAX, "        weights = nn.Dropout(self.attn_dropout.p)(F.softmax(scores, dim=-1))\n")],
           "attention", "dropout applied whatever self.training is"),
    mutant("dropout_training_flag_inverted",
           [(SOFTMAX, "        weights = F.dropout(F.softmax(scores, dim=-1), self.attn_dropout.p, "
                      "training=not self.training)\n")],
           "attention", "dropout applied whatever self.training is"),

    # -- rope -------------------------------------------------------------------------------------
    # RoPE bugs change the attention output, which the attention checks accept only when it
    # matches a RoPE bug they recognise; an unrecognised one costs attention points as well.
    mutant("rope_on_queries_only", [(ROPE, "        q, _ = self.rope(q, k)\n")],
           "rope", "RoPE applied to the queries only", core=True),
    mutant("rope_on_keys_only", [(ROPE, "        _, k = self.rope(q, k)\n")],
           "rope", "RoPE applied to the keys only"),
    mutant("rope_on_values_too", [(ROPE, ROPE + "        v, _ = self.rope(v, v)\n")],
           "rope", "RoPE also applied to the values"),
    mutant("rope_not_applied", [(ROPE, "")], "rope", "no RoPE at all"),
    mutant("rope_positions_reversed",
           [(ROPE, "        q, k = self.rope(q.flip(2), k.flip(2))\n        q, k = q.flip(2), k.flip(2)\n")],
           "rope", "positions reversed"),
    mutant("rope_positions_all_zero",
           [(ROPE, "        cos, sin = self.rope.cos_cached[0], self.rope.sin_cached[0]\n"
                   "        q = q * cos + self.rope.rotate_half(q) * sin\n"
                   "        k = k * cos + self.rope.rotate_half(k) * sin\n")],
           "rope", "position 0 for every token"),
    mutant("rope_frequencies_for_model_dim",
           [(ROPE, "        inv_freq = 1.0 / (10000 ** (torch.arange(0, self.head_dim, 2).float() / self.dim))\n"
                   "        angles = torch.outer(torch.arange(seq_len).float(), inv_freq)\n"
                   "        cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)\n"
                   "        q = q * cos + self.rope.rotate_half(q) * sin\n"
                   "        k = k * cos + self.rope.rotate_half(k) * sin\n")],
           "rope", "frequencies computed for the model dim"),
    mutant("rope_tables_for_model_dim",
           [(ROPE_INIT, "        self.rope = RotaryPositionalEmbedding(dim)\n"),
            (ROPE, "        cos = self.rope.cos_cached[:seq_len, :self.head_dim]\n"
                   "        sin = self.rope.sin_cached[:seq_len, :self.head_dim]\n"
                   "        q = q * cos + self.rope.rotate_half(q) * sin\n"
                   "        k = k * cos + self.rope.rotate_half(k) * sin\n")],
           "rope", "cos/sin tables built for the model dim"),

    # Faults in the RoPE module's angles (issue 9): the attention checks run the template's RoPE in
    # place of self.rope, so they cost rope points only; the angle check names the module when the
    # template's RoPE in its place gives RoPE's weights.
    mutant("rope_exponent_without_reciprocal",
           [(INV_FREQ, "        inv_freq = base ** (torch.arange(0, dim, 2).float() / dim)\n")],
           "rope", "the difference is in your RotaryPositionalEmbedding"),
    mutant("rope_frequency_denominator_dim_minus_one",
           [(INV_FREQ, "        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / (dim - 1)))\n")],
           "rope", "the difference is in your RotaryPositionalEmbedding"),
    # cos and sin swapped rotate by pi/2 - t * theta: the scores of the positions reversed.
    mutant("rope_cos_sin_swapped",
           [(ROTATE, "        q_rot = q * sin + self.rotate_half(q) * cos\n"
                     "        k_rot = k * sin + self.rotate_half(k) * cos\n")],
           "rope", "cos and sin swapped"),
    # A RoPE module of another API with wrong angles: the attention tests' stand-in must answer
    # the student's call (issue 19), so the bug costs rope points only.
    mutant("rope_one_tensor_api_exponent_without_reciprocal",
           ROPE_ONE_TENSOR + [(INV_FREQ, "        inv_freq = base ** (torch.arange(0, dim, 2).float() / dim)\n")],
           "rope", "the difference is in your RotaryPositionalEmbedding", core=True),
    mutant("rope_extra_return_and_offset_exponent_without_reciprocal",
           ROPE_WITH_EXTRAS + [(INV_FREQ, "        inv_freq = base ** (torch.arange(0, dim, 2).float() / dim)\n")],
           "rope", "the difference is in your RotaryPositionalEmbedding"),
    # RoPE over the whole (batch, seq, dim) queries and keys: right with one head only.
    mutant("rope_before_head_split",
           [(ROPE_INIT, "        self.rope = RotaryPositionalEmbedding(dim)\n"),
            (ROPE, ""),
            (SPLIT, SPLIT + "        q, k = self.rope(q, k)\n")],
           "rope", "before splitting the heads"),

    # -- forward(x, mask=None) that needs the mask (issue 9): causal_mask only ---------------------
    mutant("mask_required_bool",
           [(OWN_MASK, ""), (FILL, '        scores = scores.masked_fill(~mask.bool(), float("-inf"))\n')],
           "causal_mask", "when no mask was passed. With the model's mask"),
    mutant("mask_required_sliced",
           [(OWN_MASK, ""), (FILL, '        scores = scores.masked_fill(mask[:seq_len, :seq_len] == 0, float("-inf"))\n')],
           "causal_mask", "when no mask was passed. With the model's mask"),
    # Its own mask lets each position see two tokens ahead; the model's mask, passed, is used
    # right: attention and rope are measured with the model's mask passed.
    mutant("mask_own_default_sees_two_ahead",
           [(OWN_MASK, OWN_MASK.replace("device=x.device))", "device=x.device), diagonal=2)"))],
           "causal_mask", "when token 2 was perturbed"),
    # Its own mask sized from the batch axis: forward(x) raises on a batch of 2 and the message
    # must say why (issue 19), not that it builds no mask.
    mutant("mask_own_sized_from_batch",
           [(OWN_MASK, OWN_MASK.replace("torch.ones(seq_len, seq_len,", "torch.ones(batch, batch,"))],
           "causal_mask", "builds its own mask from the batch size"),
    # Masks only what it is passed: without a mask every position sees the future.
    mutant("mask_applied_only_when_passed",
           [(OWN_MASK, ""), (FILL, "        if mask is not None:\n    " + FILL)],
           "causal_mask", "no mask at all"),

    # -- mask bugs of other forms (issue 19): with every key allowed the attention is right, so
    # they cost causal_mask only; rope and attention read their property with a mask of ones
    # (or zeros, for a mask read as 1 = blocked). A NaN or garbage output trains to nothing.
    mutant("mask_scores_multiplied",
           [(FILL, "        scores = scores * mask\n")],
           "causal_mask", "expected no change", core=True),
    mutant("mask_added_instead_of_filled",
           [(FILL, "        scores = scores + mask\n")],
           "causal_mask", "expected no change"),
    mutant("mask_float_polarity_swapped",
           [(FILL, '        scores = scores.masked_fill(mask == 1, float("-inf"))\n')],
           "causal_mask", "expected finite values"),
    mutant("mask_neg1e9_after_softmax",
           [(FILL + SOFTMAX, "        weights = F.softmax(scores, dim=-1).masked_fill(mask == 0, -1e9)\n"
                             "        weights = self.attn_dropout(weights)\n")],
           "causal_mask", "expected no change"),

    # -- training ---------------------------------------------------------------------------------
    mutant("training_no_target_shift",
           [(SHIFT, "        inputs, targets = actions[:, :-1], actions[:, :-1]\n")],
           "training", "no shift", core=True),
    mutant("training_shift_wrong_way",
           [(SHIFT, "        inputs, targets = actions[:, 1:], actions[:, :-1]\n")],
           "training", "shifted the wrong way"),
    mutant("training_no_zero_grad", [(ZERO_GRAD, "")], "training", "gradients accumulate"),
    mutant("training_no_clipping", [(CLIP, "")], "training", "the gradient was not clipped"),
    mutant("training_clip_after_step", [(CLIP + STEP, STEP + CLIP)],
           "training", "clipped after optimizer.step()"),
    mutant("training_clip_to_5", [(CLIP, CLIP.replace("1.0", "5.0"))],
           "training", "instead of 1.0"),
    mutant("training_clip_each_tensor",
           [(CLIP, "        for parameter in model.parameters():\n"
                   "            torch.nn.utils.clip_grad_norm_(parameter, max_norm=1.0)\n")],
           "training", "each parameter tensor was clipped on its own"),
    mutant("training_clip_values",
           [(CLIP, "        torch.nn.utils.clip_grad_value_(model.parameters(), 1.0)\n")],
           "training", "clip_grad_value_"),
    # With the convergence config's dropout 0, eval mode trains exactly as train mode does: it
    # cannot cost convergence points, so convergence is graded and must keep them.
    mutant("training_eval_mode", [(TRAIN_MODE, "    model.eval()\n")],
           "training", "eval mode for", may_lose=""),
    # The returned loss is only reported by the convergence test, never graded there.
    mutant("training_returns_sum_of_batch_losses",
           [(TRAIN_RETURN, "    return total_loss\n    # END SOLUTION")],
           "training", "the sum of the batch losses", may_lose=""),
    mutant("training_returns_last_batch_loss",
           [(TRAIN_RETURN, "    return loss.item()\n    # END SOLUTION")],
           "training", "the last batch's loss", may_lose=""),
    mutant("training_summed_cross_entropy",
           [(TRAIN_LOSS, "        logits, _ = model(inputs)\n"
                         "        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), "
                         "targets.reshape(-1), reduction=\"sum\")\n")],
           "training", "summed over positions"),
    mutant("training_no_backward", [(BACKWARD, "")], "training", "call loss.backward()"),
    mutant("training_step_before_backward", [(BACKWARD + CLIP + STEP, STEP + BACKWARD + CLIP)],
           "training", "optimizer.step() ran before loss.backward()"),
    # Targets shifted twice: the model shifts again what train_epoch shifted, or train_epoch
    # reads two steps ahead. Either way position t learns action t + 2.
    mutant("training_targets_shifted_in_model_too",
           [(MODEL_LOSS, "            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), "
                         "targets[:, 1:].reshape(-1))\n")],
           "training", "shifts the targets itself"),
    mutant("training_targets_two_ahead",
           [(SHIFT, "        inputs, targets = actions[:, :-2], actions[:, 2:]\n")],
           "training", "position t was trained towards action t + 2"),
    # A real token used as ignore_index (a padding habit): its positions never enter the loss.
    mutant("training_ignore_index_zero",
           [(TRAIN_LOSS, "        logits, _ = model(inputs)\n"
                         "        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), "
                         "targets.reshape(-1), ignore_index=0)\n")],
           "training", "ignore_index=0"),
    mutant("training_ignore_index_last_token",
           [(TRAIN_LOSS, "        logits, _ = model(inputs)\n"
                         "        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), "
                         "targets.reshape(-1), ignore_index=model.vocab_size - 1)\n")],
           "training", "whose target is token 15"),
    # ignore_index on a real token in the model's own loss, which train_epoch uses: the training
    # checks' stand-in model takes it on, as it takes on a shift done in the model.
    mutant("training_model_loss_ignore_index_zero",
           [(MODEL_LOSS, MODEL_LOSS.replace("targets.reshape(-1))", "targets.reshape(-1), ignore_index=0)"))],
           "training", "left out of DecoderOnlyTransformer.forward's loss"),
    # The optimizer passed in is ignored: one made inside train_epoch, or one made once at module
    # level for another model (this model then never changes: convergence is downstream).
    mutant("training_own_sgd",
           [(TRAIN_MODE, TRAIN_MODE + "    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)\n")],
           "training", "an optimizer it created itself (SGD), not the optimizer passed in"),
    mutant("training_module_level_optimizer",
           [(TRAIN_SIGNATURE, "MODEL_OPTIMIZER = torch.optim.AdamW(\n"
                              "    DecoderOnlyTransformer(16, 8, 1, 2, 16).parameters())\n\n\n" + TRAIN_SIGNATURE),
            (ZERO_GRAD, "        MODEL_OPTIMIZER.zero_grad()\n"), (STEP, "        MODEL_OPTIMIZER.step()\n")],
           "training", "does not hold this model's parameters"),
    # zero_grad() once, before the loop: the first step is right, every later one also applies
    # the gradients left from the steps before it.
    mutant("training_zero_grad_once_per_epoch",
           [(ZERO_GRAD, ""), (TRAIN_MODE, TRAIN_MODE + "    optimizer.zero_grad()\n")],
           "training", "gradients accumulate"),
    mutant("training_clip_to_half", [(CLIP, CLIP.replace("1.0", "0.5"))], "training", "instead of 1.0"),
    # A look at the validation loss inside the loop leaves the model in eval mode after the
    # first step: model.train() is called at the start, and the message must not say otherwise.
    # With the convergence config's dropout 0, eval mode trains as train mode does.
    mutant("training_eval_after_first_batch",
           [(STEP, STEP + "        if num_batches == 0:\n            model.eval()  # a quick look at the loss\n")],
           "training", "in eval mode from step 2 on", may_lose=""),

    # -- convergence: its message names a cause only from the run's evidence ---------------------
    # A target-shift bug trains a model that predicts the wrong action well: a low training loss
    # and a high held-out one. Every causal test passes, so the message must name the targets
    # (the failed next-token test), not the mask.
    mutant("convergence_cause_no_target_shift",
           [(SHIFT, "        inputs, targets = actions[:, :-1], actions[:, :-1]\n")],
           "training convergence", "Likely cause: the training loss does not train every position towards "
           "its next action", may_lose=""),
    mutant("convergence_cause_targets_shifted_in_model_too",
           [(MODEL_LOSS, "            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), "
                         "targets[:, 1:].reshape(-1))\n")],
           "training convergence", "Likely cause: the training loss does not train every position towards "
           "its next action", may_lose=""),

    # -- APIs the grader cannot adapt to: a precise message naming the expected signature ---------
    # CausalSelfAttention needs a constructor argument the grader cannot know: every check that
    # builds the attention alone fails (the model, built by the student's own blocks, works).
    mutant("api_attention_requires_max_seq_len",
           [(ATTENTION_INIT, "    def __init__(self, dim: int, num_heads: int, max_seq_len: int, "
                             "dropout: float = 0.1):\n"),
            ("        self.attn = CausalSelfAttention(dim, num_heads, dropout)\n",
             "        self.attn = CausalSelfAttention(dim, num_heads, 2048, dropout)\n")],
           "causal_mask rope attention", "cannot be built the way the template's CausalSelfAttention is",
           may_lose=""),
    # Square nn.Parameter projections used as x @ W: whether W or W^T is the query matrix cannot
    # be read off a square shape, so the grader's weights are not loaded. attention and rope
    # (whose probe needs the grader's weights) fail with a message naming the layers found; the
    # causal checks need no particular weights and grade the module with its own.
    mutant("api_attention_square_parameter_projections",
           [(QKV_INIT, "".join(f"        self.W_{t} = nn.Parameter(torch.randn(dim, dim) / dim ** 0.5)\n"
                               for t in "qkv")),
            (SPLIT, "        q, k, v = x @ self.W_q, x @ self.W_k, x @ self.W_v\n")],
           "attention rope", "could not map its weights W_q, W_k, W_v, W_o"),
    mutant("api_train_epoch_requires_scheduler",
           [(TRAIN_SIGNATURE, TRAIN_SIGNATURE.replace("epoch: int)", "epoch: int, scheduler)"))],
           "training", "cannot be called the way the template's train_epoch"),
    # -- interface --------------------------------------------------------------------------------
    # A template class renamed everywhere: the model still works, only the name is gone.
    mutant("interface_feedforward_renamed",
           [("class FeedForward(nn.Module):\n", "class SwiGLU(nn.Module):\n"),
            ("        self.ff = FeedForward(dim, ff_hidden_dim, dropout)\n",
             "        self.ff = SwiGLU(dim, ff_hidden_dim, dropout)\n")],
           "interface", "backbone.py does not define FeedForward"),
]

# Every rubric rule worth points and the mutants that must fail it (test_grading.py grades each
# mutant and checks that these tests failed; test_rule_coverage.py fails when a rule worth points
# has none). A new check adds the mutant only it catches here (README: "Adding a check").
RULE_MUTANTS = {
    "test_interface.py::test_required_names": ("interface_feedforward_renamed",),
    "test_rmsnorm.py::test_forward_matches_reference": ("rmsnorm_layernorm",),
    "test_rmsnorm.py::test_gradients_match_reference": ("rmsnorm_scale_not_a_parameter",),
    "test_rmsnorm.py::test_zero_input_is_finite": ("rmsnorm_eps_outside_sqrt",),
    "test_causal_mask.py::test_attention_ignores_future_tokens": ("causal_no_mask",),
    "test_causal_mask.py::test_attention_future_gradients_are_zero": ("causal_no_mask",),
    "test_causal_mask.py::test_attention_sees_itself_and_past": ("causal_hides_diagonal",),
    "test_causal_mask.py::test_model_ignores_future_tokens": ("causal_no_mask",),
    "test_causal_mask.py::test_sequence_lengths": ("causal_no_mask",),
    "test_rope.py::test_attention_scores_depend_on_relative_position": ("rope_not_applied",),
    "test_rope.py::test_rope_applied_to_queries_and_keys_not_values": ("rope_on_queries_only",),
    "test_rope.py::test_rope_angles_in_each_head": ("rope_frequencies_for_model_dim",),
    "test_attention.py::test_output_matches_reference": ("attention_no_scaling",),
    "test_attention.py::test_explicit_mask_matches_reference": ("attention_no_scaling",),
    "test_attention.py::test_gradients_match_reference": ("attention_no_scaling",),
    "test_attention.py::test_deterministic_in_eval_mode": ("dropout_functional_without_training_flag",),
    "test_attention.py::test_sequences_attended_independently": ("attention_heads_merged_sequence_first",),
    "test_training.py::test_next_token_targets": ("training_no_target_shift",),
    "test_training.py::test_gradients_zeroed_each_step": ("training_no_zero_grad",),
    "test_training.py::test_gradient_norm_clipped": ("training_no_clipping",),
    "test_training.py::test_train_mode": ("training_eval_mode",),
    "test_training.py::test_returns_mean_batch_loss": ("training_returns_sum_of_batch_losses",),
    "test_convergence.py::test_heldout_loss": ("convergence_cause_no_target_shift",),
}
# Rules no one-bug variant of the reference can fail (there is no file, or none that compiles or
# imports), and the kit test that fails them instead.
RULES_FAILED_ELSEWHERE = {
    "test_interface.py::test_submission_found":
        "test_intake.py::test_every_upload_gets_complete_results_with_a_specific_message",
    "test_interface.py::test_compiles": "test_hostile.py::test_broken_at_import_scores_only_the_interface_it_passes",
    "test_interface.py::test_imports": "test_hostile.py::test_broken_at_import_scores_only_the_interface_it_passes",
}


def rules_failed_by(variant) -> list:
    """The rubric tests ("file::function") that grading `variant` must fail (RULE_MUTANTS)."""
    return [rule for rule, names in RULE_MUTANTS.items() if variant.name in names]

# -- correct alternatives ------------------------------------------------------------------------

INTERLEAVED_ROPE = '''def rope_interleaved(x: torch.Tensor) -> torch.Tensor:
    """RoPE pairing dimensions (2i, 2i + 1), as in the RoFormer paper."""
    seq_len, head_dim = x.shape[-2], x.shape[-1]
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.outer(torch.arange(seq_len).float(), inv_freq)
    cos, sin = angles.cos(), angles.sin()
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


class CausalSelfAttention(nn.Module):'''

KV_CACHE_ATTENTION = '''    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        batch, seq_len, _ = t.shape
        return t.view(batch, seq_len, self.num_heads, self.head_dim).transpose(1, 2)

    def _rotate(self, t: torch.Tensor, start: int) -> torch.Tensor:
        """RoPE at positions start, start + 1, ...: cached keys keep their own positions."""
        cos = self.rope.cos_cached[start:start + t.shape[-2]].to(t.dtype)
        sin = self.rope.sin_cached[start:start + t.shape[-2]].to(t.dtype)
        return t * cos + self.rope.rotate_half(t) * sin

    def forward(self, x: torch.Tensor, mask: torch.Tensor = None, cache: dict = None) -> torch.Tensor:
        """x: (batch, seq, dim) -> (batch, seq, dim); `cache` (a dict, updated in place) holds the
        keys and values of earlier positions when generating."""
        batch, seq_len, dim = x.shape
        q, k, v = (self._split_heads(t) for t in self.qkv_proj(x).split(self.dim, dim=2))
        past = cache["k"].shape[-2] if cache else 0
        q, k = self._rotate(q, past), self._rotate(k, past)
        if cache is not None:
            if past:
                k, v = torch.cat([cache["k"], k], dim=-2), torch.cat([cache["v"], v], dim=-2)
            cache["k"], cache["v"] = k, v
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        allowed = torch.ones(seq_len, past + seq_len, dtype=torch.bool, device=x.device).tril(past)
        weights = self.attn_dropout(F.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(batch, seq_len, dim)
        return self.resid_dropout(self.out_proj(out))
'''

KV_CACHE_GENERATE = '''    @staticmethod
    def _sample(logits: torch.Tensor, temperature: float, top_k: int = None) -> torch.Tensor:
        logits = logits / temperature
        if top_k is not None:
            kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int = None) -> torch.Tensor:
        """Sample with a key/value cache: each new token costs one position, not the window."""
        caches = None
        for _ in range(max_new_tokens):
            if caches is None or caches[0]["k"].shape[-2] >= self.max_seq_len:
                caches = [{} for _ in self.blocks]
                logits, _ = self(input_ids[:, -self.max_seq_len:], caches=caches)
            else:
                logits, _ = self(input_ids[:, -1:], caches=caches)
            input_ids = torch.cat([input_ids, self._sample(logits[:, -1], temperature, top_k)], 1)
        return input_ids
'''


def _between(start: str, end: str) -> str:
    """The reference's text from `start` up to (not including) `end`."""
    with open(REFERENCE) as file:
        text = file.read()
    first = text.index(start)
    return text[first:text.index(end, first)]


ATTENTION_BODY = _between("    def forward(self, x: torch.Tensor, mask: torch.Tensor = None) -> torch.Tensor:\n"
                          "        \"\"\"x: (batch, seq, dim)", "class FeedForward")
GENERATE = _between("    @torch.no_grad()\n    def generate(", "def train_epoch(")

POLAR_ROPE = '''def rope_complex(x: torch.Tensor) -> torch.Tensor:
    """RoPE as a complex product: pairs (2i, 2i + 1) times e^(i t theta_i), via torch.polar."""
    seq_len, head_dim = x.shape[-2], x.shape[-1]
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.outer(torch.arange(seq_len).float(), inv_freq)
    rotation = torch.polar(torch.ones_like(angles), angles)  # (seq, head_dim/2) complex
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], head_dim // 2, 2))
    return torch.view_as_real(pairs * rotation).flatten(-2).type_as(x)


class CausalSelfAttention(nn.Module):'''

ALTERNATIVES = [
    alternative("rope_interleaved",
                [("class CausalSelfAttention(nn.Module):", INTERLEAVED_ROPE),
                 (ROPE, "        q, k = rope_interleaved(q), rope_interleaved(k)\n")], core=True),
    alternative("rope_module_one_tensor_api", ROPE_ONE_TENSOR),
    alternative("rope_module_extra_return_and_offset", ROPE_WITH_EXTRAS),
    alternative("rope_complex_polar_inline",
                [("class CausalSelfAttention(nn.Module):", POLAR_ROPE),
                 (ROPE, "        q, k = rope_complex(q), rope_complex(k)\n")]),
    # The provided module rewritten as a complex product (interleaved pairs): still RoPE.
    alternative("rope_module_complex_polar",
                [(ROTATE + "        return q_rot, k_rot\n",
                  "        angles = self.cos_cached.new_tensor(torch.outer(torch.arange(seq_len).float(), "
                  "1.0 / (10000.0 ** (torch.arange(0, self.dim, 2).float() / self.dim))))\n"
                  "        rotation = torch.polar(torch.ones_like(angles), angles)\n"
                  "        q_rot, k_rot = (torch.view_as_real(torch.view_as_complex(t.float().reshape("
                  "*t.shape[:-1], -1, 2)) * rotation).flatten(-2).type_as(t) for t in (q, k))\n"
                  "        return q_rot, k_rot\n")]),
    alternative("attention_q_prescaled",
                [(SCORES, "        q = q / math.sqrt(self.head_dim)\n"
                          "        scores = q @ k.transpose(-2, -1)  # (b, h, s, s)\n")]),
    alternative("attention_einsum_float64_neg1e9",
                [(SCORES, "        scores = torch.einsum('bhqd,bhkd->bhqk', q.double(), k.double()) "
                          "/ math.sqrt(self.head_dim)\n"),
                 (FILL, "        scores = scores.masked_fill(mask == 0, -1e9)\n"),
                 (SOFTMAX, "        weights = self.attn_dropout(F.softmax(scores, dim=-1).float())\n"),
                 (COMBINE, "        out = torch.einsum('bhqk,bhkd->bhqd', weights, v)\n")]),
    alternative("mask_bool_finfo_min",
                [(FILL, "        blocked = ~mask.bool()\n"
                        "        scores = scores.masked_fill(blocked, torch.finfo(scores.dtype).min)\n")]),
    alternative("mask_additive",
                [(FILL, "        scores = scores + torch.zeros_like(mask, dtype=scores.dtype)"
                        ".masked_fill(mask == 0, float(\"-inf\"))\n")]),
    # Ignores the mask it is passed and builds its own with torch.where.
    alternative("mask_own_torch_where",
                [(OWN_MASK, "        mask = torch.ones(seq_len, seq_len, dtype=torch.bool, "
                            "device=x.device).tril()\n"),
                 (FILL, "        scores = torch.where(mask, scores, torch.full_like(scores, float(\"-inf\")))\n")]),
    alternative("attention_sdpa",
                [(SCORES + OWN_MASK + FILL + SOFTMAX + "\n" + COMBINE,
                  "        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)\n")]),
    alternative("qkv_from_weight_slices",
                [(SPLIT, "        w_q, w_k, w_v = self.qkv_proj.weight.chunk(3, dim=0)\n"
                         "        q, k, v = x @ w_q.T, x @ w_k.T, x @ w_v.T\n")]),
    alternative("qkv_separate_linear_layers",
                [("        self.qkv_proj = nn.Linear(dim, 3 * dim, bias=False)  # rows: [W_q; W_k; W_v]\n",
                  "".join(f"        self.{t}_proj = nn.Linear(dim, dim)\n" for t in "qkv")),
                 (SPLIT, "        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)\n")],
                note="uses q_proj (q), k_proj (k), v_proj (v) and out_proj instead of qkv_proj"),
    alternative("projections_q_and_kv_with_bias",
                [(QKV_INIT, "        self.q_proj = nn.Linear(dim, dim)\n"
                            "        self.kv_proj = nn.Linear(dim, 2 * dim)  # rows: [W_k; W_v]\n"),
                 (OUT_INIT, "        self.o_proj = nn.Linear(dim, dim)\n"),
                 (SPLIT, "        q = self.q_proj(x)\n        k, v = self.kv_proj(x).chunk(2, dim=-1)\n"),
                 (PROJECT, "        return self.resid_dropout(self.o_proj(out))\n")],
                note="uses q_proj (q), kv_proj (k, v) and o_proj"),
    alternative("projections_nanogpt_c_attn_c_proj",
                [(QKV_INIT, "        self.c_attn = nn.Linear(dim, 3 * dim)\n"),
                 (OUT_INIT, "        self.c_proj = nn.Linear(dim, dim)\n"),
                 (SPLIT, "        q, k, v = self.c_attn(x).split(self.dim, dim=2)\n"),
                 (PROJECT, "        return self.resid_dropout(self.c_proj(out))\n")],
                note="uses c_attn (q, k, v) and c_proj"),
    # Layouts whose rows only behaviour tells apart (issue 19): the grader finds each row's role
    # by how it moves the output, and loads its weights row by row.
    alternative("projections_qkv_proj_per_head",
                [(SPLIT + HEADS, "        q, k, v = self.qkv_proj(x).view(batch, seq_len, self.num_heads, 3, "
                                 "self.head_dim).transpose(1, 2).unbind(3)  # (heads, 3, head_dim)\n")],
                note="found by how it moves your attention's output", core=True),
    alternative("projections_c_attn_per_element",
                [(QKV_INIT, "        self.c_attn = nn.Linear(dim, 3 * dim)\n"),
                 (SPLIT + HEADS, "        q, k, v = self.c_attn(x).view(batch, seq_len, self.num_heads, "
                                 "self.head_dim, 3).transpose(1, 2).unbind(-1)  # (dim, 3)\n")],
                note="found by how it moves your attention's output"),
    alternative("projections_q_and_kv_per_head_with_bias",
                [(QKV_INIT, "        self.q_proj = nn.Linear(dim, dim)\n"
                            "        self.kv_proj = nn.Linear(dim, 2 * dim)  # (heads, 2, head_dim)\n"),
                 (SPLIT + HEADS, "        q = self.q_proj(x).view(batch, seq_len, self.num_heads, self.head_dim).transpose(1, 2)\n"
                                 "        k, v = self.kv_proj(x).view(batch, seq_len, self.num_heads, 2, "
                                 "self.head_dim).transpose(1, 2).unbind(3)\n")],
                note="found by how it moves your attention's output"),
    alternative("rmsnorm_f_rms_norm_with_eps",
                [(RMS + NORMED, "        return F.rms_norm(x, (x.shape[-1],), self.scale, self.eps)\n")]),
    # SDPA with the mask as a bool tensor, and attention dropout only in training.
    alternative("attention_sdpa_bool_mask",
                [(ATTENTION_CORE, OWN_MASK + "        out = F.scaled_dot_product_attention(q, k, v, "
                                  "attn_mask=mask.bool(), dropout_p=self.attn_dropout.p if self.training else 0.0)\n")]),
    alternative("dropout_functional_with_training_flag",
                [(SOFTMAX, "        weights = F.dropout(F.softmax(scores, dim=-1), p=self.attn_dropout.p, "
                           "training=self.training)\n")]),
    # nanoGPT's causal mask: a bool buffer registered once for the longest sequence, sliced.
    alternative("mask_buffer_registered_once_sliced",
                [(ROPE_INIT, ROPE_INIT + "        self.register_buffer(\"causal\", torch.ones(2048, 2048, "
                                         "dtype=torch.bool).tril(), persistent=False)\n"),
                 (OWN_MASK, "        if mask is None:\n            mask = self.causal[:seq_len, :seq_len]\n")]),
    alternative("rmsnorm_float32_upcast_rsqrt",
                [(RMS + NORMED,
                  "        x32 = x.float()\n"
                  "        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)\n"
                  "        return normed.type_as(x) * self.scale\n")], core=True),
    alternative("rmsnorm_float64_norm",
                [(RMS, "        rms = (x.double().norm(dim=-1, keepdim=True) / x.shape[-1] ** 0.5)"
                       ".pow(2).add(self.eps).sqrt().to(x.dtype)\n")]),
    alternative("training_set_to_none_before_forward",
                [(ZERO_GRAD, ""),
                 ("        actions = actions.to(device)\n        inputs",
                  "        optimizer.zero_grad(set_to_none=True)\n        actions = actions.to(device)\n        inputs")]),
    # Computes the loss itself, weights the returned mean by tokens, prints every batch.
    alternative("training_token_weighted_mean",
                [(TRAIN_LOSS + BACKWARD + CLIP + STEP + "        total_loss += loss.item()\n"
                  "        num_batches += 1\n" + TRAIN_RETURN,
                  "        logits, _ = model(inputs)\n"
                  "        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))\n"
                  + BACKWARD + CLIP + STEP +
                  "        total_loss += loss.item() * targets.numel()\n"
                  "        num_batches += targets.numel()\n"
                  "        print(f\"epoch {epoch} loss {loss.item():.4f}\")\n" + TRAIN_RETURN)]),
    alternative("training_full_sequence_sliced_logits",
                [(SHIFT + ZERO_GRAD + TRAIN_LOSS,
                  ZERO_GRAD + "        logits, _ = model(actions)\n"
                  "        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), "
                  "actions[:, 1:].reshape(-1))\n")]),
    # Correct loops in other styles (issue 19): judged per optimizer step, not per forward call.
    # Gradient accumulation within a batch: micro-batches of 3, 3 and 2 sequences, each loss
    # weighted by its share, one clip and one step (the case micro_batch_accumulation has four).
    alternative("training_micro_batches_accumulated",
                [(TRAIN_LOSS + BACKWARD,
                  "        loss = 0.0\n"
                  "        for part_in, part_tg in zip(inputs.split(3), targets.split(3)):\n"
                  "            _, part_loss = model(part_in, part_tg)\n"
                  "            share = part_in.shape[0] / inputs.shape[0]\n"
                  "            (part_loss * share).backward()\n"
                  "            loss = loss + part_loss.detach() * share\n")]),
    alternative("training_autocast_guarded",
                [(TRAIN_LOSS, "        with torch.autocast(device_type=device.type, enabled=device.type == \"cuda\"):\n"
                              "            _, loss = model(inputs, targets)\n")]),
    # A warm-up scheduler made for the first epoch and stepped after every batch.
    alternative("training_per_batch_scheduler",
                [(TRAIN_MODE, TRAIN_MODE + "    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.25, "
                                           "total_iters=len(dataloader)) if epoch == 0 else None\n"),
                 (STEP, STEP + "        if warmup is not None:\n            warmup.step()\n")]),
    alternative("training_cross_entropy_class_dim_first",
                [(TRAIN_LOSS, "        logits, _ = model(inputs)\n"
                              "        loss = F.cross_entropy(logits.transpose(1, 2), targets)\n")]),
    # A look at the loss in eval mode inside the loop, then back to train mode.
    alternative("training_eval_inside_loop_then_train",
                [(STEP, STEP + "        if num_batches == 0:\n            model.eval()\n"
                               "            with torch.no_grad():\n                model(inputs)\n"
                               "            model.train()\n")]),
    alternative("generate_with_kv_cache",
                [(ATTENTION_BODY, KV_CACHE_ATTENTION + "\n\n"),
                 ("    def forward(self, x: torch.Tensor, mask: torch.Tensor = None) -> torch.Tensor:\n"
                  "        x = x + self.attn(self.norm1(x), mask)\n",
                  "    def forward(self, x: torch.Tensor, mask: torch.Tensor = None, cache: dict = None):\n"
                  "        x = x + self.attn(self.norm1(x), mask, cache)\n"),
                 ("    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor = None):\n",
                  "    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor = None, caches=None):\n"),
                 ("        for block in self.blocks:\n            x = block(x, mask)\n",
                  "        for index, block in enumerate(self.blocks):\n"
                  "            x = block(x, mask, caches[index] if caches else None)\n"),
                 (GENERATE, KV_CACHE_GENERATE + "\n\n")]),
]

# -- correct submissions in another API: the grader adapts, and says so --------------------------

API_VARIANTS = [
    alternative("api_attention_forward_without_mask",
                [(ATTENTION_FORWARD, "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n        \"\"\"x: (batch, seq, dim)"),
                 (OWN_MASK, "        mask = torch.tril(torch.ones(seq_len, seq_len, device=x.device))\n"),
                 (BLOCK_CALL, "        x = x + self.attn(self.norm1(x))\n")],
                note="takes no `mask` argument"),
    alternative("api_attention_forward_requires_mask",
                [(ATTENTION_FORWARD, "    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:\n"
                                     "        \"\"\"x: (batch, seq, dim)"),
                 (OWN_MASK, "")],
                note="requires `mask`"),
    alternative("api_attention_returns_output_weights_cache",
                [(PROJECT, "        return self.resid_dropout(self.out_proj(out)), weights, (k, v)\n"),
                 (BLOCK_CALL, "        x = x + self.attn(self.norm1(x), mask)[0]\n")],
                note="returned a tuple of 3 items"),
    # The block keeps the attention weights its attention returns: the grader's attention,
    # returning None there, cannot stand in, so the model API is read off the student's own model.
    alternative("api_block_keeps_attention_weights",
                [(PROJECT, "        return self.resid_dropout(self.out_proj(out)), weights\n"),
                 (BLOCK_CALL, "        attended, weights = self.attn(self.norm1(x), mask)\n"
                              "        self.attention_entropy = -(weights * weights.clamp_min(1e-9).log()).sum(-1).mean().detach()\n"
                              "        x = x + attended\n")],
                note="it was read off your own model instead"),
    # Extra constructor keywords with defaults need no adaptation: the mask is a buffer built
    # for max_seq_len and sliced correctly.
    alternative("api_attention_extra_constructor_keywords",
                [(ATTENTION_INIT, ATTENTION_INIT.replace("dropout: float = 0.1", "dropout: float = 0.1, "
                                                         "max_seq_len: int = 512, bias: bool = False")),
                 (ROPE_INIT, ROPE_INIT + "        self.register_buffer(\"causal_mask\", torch.tril("
                                         "torch.ones(max_seq_len, max_seq_len)), persistent=False)\n"),
                 (OWN_MASK, "        if mask is None:\n            mask = self.causal_mask[:seq_len, :seq_len]\n")]),
    alternative("api_model_returns_logits_only",
                [(MODEL_RETURN, "        return logits\n"),
                 (GENERATE_CALL, "            logits = self(context)\n"),
                 (TRAIN_LOSS, "        logits = model(inputs)\n"
                              "        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))\n"),
                 (EVALUATE_CALL, "        logits = model(actions[:, :-1])\n"
                                 "        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), "
                                 "actions[:, 1:].reshape(-1))\n")],
                note="returns logits only"),
    alternative("api_model_returns_logits_loss_hidden",
                [(MODEL_RETURN, "        return logits, loss, x\n"),
                 (GENERATE_CALL, "            logits, _, _ = self(context)\n"),
                 (TRAIN_LOSS, "        _, loss, _ = model(inputs, targets)\n"),
                 (EVALUATE_CALL, "        _, loss, _ = model(actions[:, :-1], actions[:, 1:])\n")],
                note="a tuple of 3 items"),
    # The model shifts targets of the input's length itself; train_epoch passes the actions as
    # both. The training checks' stand-in model must shift the same way.
    alternative("api_model_shifts_targets",
                [(MODEL_LOSS,
                  "            scored = logits\n"
                  "            if targets.shape[1] == seq_len:  # next-token targets: shift here\n"
                  "                scored, targets = logits[:, :-1], targets[:, 1:]\n"
                  "            loss = F.cross_entropy(scored.reshape(-1, scored.size(-1)), "
                  "targets.reshape(-1))\n"),
                 (SHIFT + ZERO_GRAD + TRAIN_LOSS, ZERO_GRAD + "        _, loss = model(actions, actions)\n")],
                note="shifts targets of the input's length itself", core=True),
    alternative("api_train_epoch_extra_arguments_returns_tensor_prints",
                [(TRAIN_SIGNATURE, TRAIN_SIGNATURE.replace("epoch: int)", "epoch: int, scheduler=None, "
                                                           "log_every: int = 1)")),
                 (STEP, STEP + "        if scheduler is not None:\n            scheduler.step()\n"
                              "        if num_batches % log_every == 0:\n"
                              "            print(f\"epoch {epoch} batch {num_batches} loss {loss.item():.4f}\")\n"),
                 (TRAIN_RETURN, "    return torch.tensor(total_loss / max(num_batches, 1))\n    # END SOLUTION")],
                note="train_epoch returned a tensor"),
    alternative("api_train_epoch_without_epoch",
                [(TRAIN_SIGNATURE, "def train_epoch(model, dataloader, optimizer, device):\n")],
                note="train_epoch takes only"),
    # main() runs at import: it finds no data/trajectories.pkl in the grader's empty working
    # directory and raises SystemExit after every graded name is defined.
    alternative("api_main_without_guard", [(MAIN_GUARD, "main()\n")],
                note="ran module-level code at line", core=True),
]


# -- correct submissions written for another machine: packages the grader lacks, a GPU it lacks --
# The graded code uses the missing package or the hard-coded device on the way through optimizer
# steps, clip_grad_norm_ and torch.save; the grader must stub or remap, grade fully, and say so.

IMPORTS = "import torch.nn.functional as F\n"
TRAIN_LOOP = "    for _states, actions in dataloader:\n        actions = actions.to(device)\n" + SHIFT
STUBBED = "failed in the grading environment (no module `{}` here): it was replaced by a stub"
CUDA_ON_CPU = "CUDA was mapped to the CPU"

ENVIRONMENT_VARIANTS = [
    alternative("import_missing_pandas_tqdm_with_checkpoint",
                [(IMPORTS, IMPORTS + "import pandas as pd\nfrom tqdm import tqdm\n"),
                 (TRAIN_LOOP, TRAIN_LOOP.replace("in dataloader:", "in tqdm(dataloader, desc=f\"epoch {epoch}\"):")),
                 (TRAIN_RETURN, "    torch.save(model.state_dict(), \"checkpoint.pt\")\n" + TRAIN_RETURN)],
                # pandas, not tqdm: tqdm comes with the TA extras (copydetect) that CI installs
                note="`import pandas` " + STUBBED.format("pandas"), core=True),
    # The student's own helper module, imported inside the graded function.
    alternative("import_missing_own_helper_in_function",
                [(TRAIN_MODE, "    from utils import log_metrics\n" + TRAIN_MODE),
                 (STEP, STEP + "        log_metrics(epoch=epoch, loss=loss.item())\n")],
                note="`from utils import log_metrics` " + STUBBED.format("utils"), core=True),
    alternative("import_missing_wandb_seaborn",
                [(IMPORTS, IMPORTS + "import seaborn as sns\nimport wandb\n"),
                 (STEP, STEP + "        wandb.log({\"train/loss\": loss.item(), \"epoch\": epoch})\n")],
                note="`import wandb` " + STUBBED.format("wandb")),
    # torch is installed, its tensorboard module needs the missing `tensorboard` package.
    alternative("import_missing_tensorboard_summary_writer",
                [(IMPORTS, IMPORTS + "from torch.utils.tensorboard import SummaryWriter\n\n"
                                     "writer = SummaryWriter(log_dir=\"runs\")\n"),
                 (STEP, STEP + "        writer.add_scalar(\"train/loss\", loss.item(), num_batches)\n")],
                note="`from torch.utils.tensorboard import SummaryWriter` " + STUBBED.format("tensorboard")),
    alternative("import_missing_einops_unused",
                [(IMPORTS, IMPORTS + "from einops import rearrange\n")],
                note="`from einops import rearrange` " + STUBBED.format("einops")),
    alternative("device_cuda_string_in_attention_mask",
                [(OWN_MASK, OWN_MASK.replace("device=x.device", "device=\"cuda\""))],
                note=CUDA_ON_CPU, core=True),
    alternative("device_dot_cuda_in_train_epoch",
                [(TRAIN_MODE, "    model.cuda()\n" + TRAIN_MODE),
                 (TRAIN_LOOP, TRAIN_LOOP.replace("actions.to(device)", "actions.cuda()"))],
                note=CUDA_ON_CPU),
    alternative("device_to_cuda_string_in_model",
                [("        mask = torch.tril(torch.ones(seq_len, seq_len, device=input_ids.device))\n",
                  "        mask = torch.tril(torch.ones(seq_len, seq_len)).to(\"cuda\")\n")],
                note=CUDA_ON_CPU),
    alternative("device_torch_device_cuda0_module_level",
                [(IMPORTS, IMPORTS + "\nDEVICE = torch.device(\"cuda:0\")\n"),
                 (TRAIN_MODE, "    model.to(DEVICE)\n" + TRAIN_MODE),
                 (TRAIN_LOOP, TRAIN_LOOP.replace("actions.to(device)", "actions.to(DEVICE)"))],
                note=CUDA_ON_CPU),
]

VARIANTS = MUTANTS + ALTERNATIVES + API_VARIANTS + ENVIRONMENT_VARIANTS
