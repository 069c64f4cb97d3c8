"""How each choice of a request picks its tokens: its sampler chain (seed + index), the
argmax shortcut for plain greedy, and grammars, lazy ones started by their trigger."""

from __future__ import annotations

import logging
import time

from core.engine.batch_context import BatchContext
from core.engine.constrained import Candidates, LazyGrammar, sample_constrained
from core.engine.samplers import new_chain, plain_greedy
from core.engine.sequence import Choice, Job
from core.engine.vocab import Vocab
from core.errors import InvalidRequest

log = logging.getLogger(__name__)

# Longest a grammar may take to check one token before its request is failed.
GRAMMAR_STEP_LIMIT_S = 0.25


class ChoicePicker:
    """Builds choices' samplers and picks their tokens at batch indices; step thread only."""

    def __init__(self, name: str, ctx: BatchContext, vocab: Vocab) -> None:
        self._name = name
        self._ctx = ctx
        self._vocab = vocab
        self._candidates = Candidates(vocab.n_vocab)  # for grammar-constrained choices

    def choices(self, job: Job) -> list[Choice]:
        """One Choice per slot of the job, each with its own sampler chain (seed + index)."""
        request, choices = job.request, []
        greedy = plain_greedy(request.sampling)
        try:
            for index, slot in enumerate(job.slots):
                seed = request.sampling.seed_for(index)
                chain = new_chain(
                    self._vocab.n_vocab, request.sampling, seed, job.prompt, request.max_tokens
                )
                choices.append(Choice(index, slot, chain, job, argmax=greedy))
                if job.grammar:
                    grammar = self._vocab.grammar_sampler(job.grammar)
                    if grammar is None:
                        raise RuntimeError("a grammar that compiled before no longer does")
                    trigger = request.sampling.grammar_trigger
                    if trigger:
                        choices[-1].lazy = LazyGrammar(grammar, trigger.encode())
                    else:
                        choices[-1].grammar = grammar
        except BaseException:
            for choice in choices:
                choice.free_chain()
            raise
        return choices

    def watch(self, choice: Choice, lazy: LazyGrammar, token: int) -> None:
        """Starts the choice's lazy grammar when the token completes its trigger (control
        tokens count by their text, as llama.cpp's grammar reads them)."""
        started = lazy.feed(self._vocab.piece(token, special=True))
        if started is None:
            return
        choice.lazy = None
        if lazy.wake(started, self._vocab, self._candidates):
            choice.grammar = lazy.grammar
            return
        # The model wrote the trigger and then something no call starts with: the rest stays
        # free, and the parser reads what it can (a call cut short is dropped).
        log.debug("model %s: %r does not start a grammar; left unconstrained", self._name, started)
        self._vocab.free_sampler(lazy.grammar)

    def pick(self, choice: Choice, index: int) -> int | None:
        """The choice's token at a batch index; None when its grammar is complete and nothing
        may follow; InvalidRequest when its grammar is too slow to follow."""
        if choice.grammar is None:
            if choice.argmax:
                return self._ctx.argmax(index)
            return self._ctx.sample(choice.chain, index)
        started = time.perf_counter()
        token = sample_constrained(
            choice.chain, choice.grammar, self._ctx.logits(index), self._candidates
        )
        # Some grammars cost exponentially more with each token, inside llama.cpp where nothing
        # can interrupt them; stop following one before it stalls every request on the model.
        if time.perf_counter() - started > GRAMMAR_STEP_LIMIT_S:
            field = choice.job.request.sampling.grammar_param
            raise InvalidRequest(
                f"{field}: one token took over {GRAMMAR_STEP_LIMIT_S} s to check; "
                "simplify the grammar or schema",
                param=field,
            )
        return token
