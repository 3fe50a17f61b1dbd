"""The candidate cached decoding paths of the student's model (the mastery checks): how each is
called, greedily or not, and what it returns."""

import inspect

import torch

from .calls import call_submission, first_tensor

CACHE_WORDS = ("cache", "kv")
# Greedy decoding through the template's sampling API: top_k=1 leaves one token to sample
# (the argmax); without top_k, a temperature this small does the same unless the two largest
# logits are within ~1e-4 of each other.
GREEDY = {"top_k": {"top_k": 1}, "temperature": {"temperature": 1e-6}}


class DecodePath:
    """One way to call the student's decoding: generate itself, generate with a cache keyword
    (use_cache=True), or a method named like generate_cached. `name` is how it was called, as
    the student reads it; call(ids, new_tokens, greedy) returns the (batch, seq + new) ids."""

    def __init__(self, session, function: str, method, switch: dict):
        self.session, self.function, self.method, self.switch = session, function, method, switch
        self.name = f"{function}({', '.join(f'{key}=True' for key in switch)})"
        try:
            self.parameters = set(inspect.signature(method).parameters)
        except (TypeError, ValueError):
            self.parameters = set()

    def sampling(self, greedy: str) -> dict:
        """The keywords that make it greedy: GREEDY[greedy] when it takes them, else nothing."""
        keywords = GREEDY[greedy] if greedy else {}
        return {k: v for k, v in keywords.items() if k in self.parameters}

    def described(self, greedy: str = None) -> str:
        """The call as written in Python, e.g. 'generate(input_ids, n, use_cache=True, top_k=1)'."""
        keywords = {**self.switch, **self.sampling(greedy)}
        return (f"{self.function}(input_ids, n"
                + "".join(f", {key}={value!r}" for key, value in keywords.items()) + ")")

    def call(self, ids: torch.Tensor, new_tokens: int, greedy: str = None) -> torch.Tensor:
        output = call_submission(self.method, ids, new_tokens, **self.switch, **self.sampling(greedy))
        output = first_tensor(output, self.session, self.name)
        if not output.is_floating_point():
            output = output.to(ids.dtype)
        if tuple(output.shape) == (ids.shape[0], new_tokens):
            self.session.note(f"{self.name} returned only the new tokens: graded them after the prompt")
            output = torch.cat([ids, output.to(ids.dtype)], dim=1)
        return output


def decode_paths(session, model) -> list:
    """The candidate cached decoding paths, the most explicit first: methods named like
    generate_cached / generate_with_cache / generate_kv; generate(..., <cache keyword>=True)
    when generate has a parameter named like use_cache or kv_cache; generate itself."""
    paths = []
    names = sorted(name for name in dir(type(model)) if not name.startswith("__")
                   and name != "generate" and not hasattr(torch.nn.Module, name)
                   and ("generate" in name or "decode" in name or "sample" in name)
                   and any(word in name.lower() for word in CACHE_WORDS))
    for name in names:
        method = getattr(model, name, None)
        if callable(method):
            paths.append(DecodePath(session, name, method, {}))
    generate = getattr(model, "generate", None)
    if callable(generate):
        try:
            parameters = inspect.signature(generate).parameters
        except (TypeError, ValueError):
            parameters = {}
        switches = [p for p in parameters if any(word in p.lower() for word in CACHE_WORDS)]
        for switch in switches:
            paths.append(DecodePath(session, "generate", generate, {switch: True}))
        paths.append(DecodePath(session, "generate", generate, {}))
    return paths
