"""
A linear-chain conditional random field (CRF): a sentence's tags scored as one sequence, for tagging.

    crf = CRF(n_labels)
    loss = crf.nll(emissions, tags, mask).sum() / mask.sum()   # training: negative log-likelihood per word
    paths = crf.viterbi(emissions, mask, labels)               # the best valid IOB2 tags of each sentence

A per-word classifier chooses each tag alone, so nothing stops it saying "B-PER I-ORG". A CRF adds
learned transition scores: the score of a tag sequence y over words 1..n is

    start[y_1] + emissions[1, y_1] + sum over k > 1 of (transitions[y_{k-1}, y_k] + emissions[k, y_k]) + end[y_n]

and its probability is exp(score) / Z, where Z sums exp(score) over every one of the L^n sequences.
Z is computed in n steps by the forward algorithm, the best sequence by Viterbi's (the same recursion
with max in place of logsumexp). Lafferty et al. 2001, https://repository.upenn.edu/cis_papers/159/;
the neural form (emissions from a network): Lample et al. 2016, https://arxiv.org/abs/1603.01360.

Shape letters: B batch (sentences), T time (words), L labels (tags). Every function takes the
emissions (B, T, L), one score per word and tag from whatever reads the words (a GPT head, or
hand-made features), and mask (B, T), True at real words: rows are padded on the right, and every
row has at least one word. Padding never changes a result.
"""

import torch
import torch.nn as nn

from finetuning.tagging import iob2_starts, iob2_transitions


class CRF(nn.Module):
    """The learned scores of a linear-chain CRF over n_labels tags. They start at zero, where the CRF
    is a per-word softmax: every sequence gets the same transition scores."""

    def __init__(self, n_labels):
        super().__init__()
        self.transitions = nn.Parameter(torch.zeros(n_labels, n_labels))  # [i, j]: tag j right after tag i
        self.start = nn.Parameter(torch.zeros(n_labels))  # the first word's tag
        self.end = nn.Parameter(torch.zeros(n_labels))  # the last word's tag

    def score(self, emissions, tags, mask):
        """The score of the tag sequences tags (B, T) (any value at padding) -> (B,)."""
        tags = tags.masked_fill(~mask, 0)  # padding's tag is never counted, but it must be a valid index
        emitted = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T): each word's score for its tag
        moves = self.transitions[tags[:, :-1], tags[:, 1:]]  # (B, T-1): each step from one tag to the next
        last = tags.gather(1, (mask.sum(1, keepdim=True) - 1)).squeeze(1)  # (B,) each row's last real tag
        return (self.start[tags[:, 0]] + emitted.masked_fill(~mask, 0).sum(1)
                + moves.masked_fill(~mask[:, 1:], 0).sum(1) + self.end[last])

    def log_partition(self, emissions, mask):
        """log Z, the log of the summed exp(score) of every tag sequence (the forward algorithm) -> (B,).
        alpha[b, j] is the log-sum over every path of the words so far that ends in tag j; one more
        word extends each path by a transition and an emission, in O(T L^2) instead of O(L^T)."""
        alpha = self.start + emissions[:, 0]  # (B, L)
        for t in range(1, emissions.size(1)):
            # from every previous tag i to every tag j: (B, L, 1) + (L, L) -> (B, L, L), summed over i
            extended = torch.logsumexp(alpha.unsqueeze(2) + self.transitions, dim=1) + emissions[:, t]  # (B, L)
            alpha = torch.where(mask[:, t].unsqueeze(1), extended, alpha)  # a row that has ended keeps its alpha
        return torch.logsumexp(alpha + self.end, dim=1)  # (B,)

    def nll(self, emissions, tags, mask):
        """Each sentence's negative log-likelihood of its gold tags, -log(exp(score) / Z) -> (B,).
        While the CRF's scores are zero it is the sum of the words' cross-entropies."""
        return self.log_partition(emissions, mask) - self.score(emissions, tags, mask)

    @torch.no_grad()
    def viterbi(self, emissions, mask, labels):
        """The best tag sequence of each row in which no I-X starts an entity: a list of B lists of tag
        indices, one per real word. labels: the tag names. IOB2's rule is not learned but imposed:
        forbidden transitions (O -> I-PER, B-LOC -> I-PER) and starts (I-X) score -inf, so no path
        takes them. Training leaves them in (it sums over every sequence), so any gold sequence,
        even one that breaks the rule, has a finite likelihood."""
        transitions = self.transitions.masked_fill(~iob2_transitions(labels).to(mask.device), float("-inf"))
        start = self.start.masked_fill(~iob2_starts(labels).to(mask.device), float("-inf"))
        best = start + emissions[:, 0]  # (B, L): the score of the best path so far ending in each tag
        stay = torch.arange(len(labels), device=mask.device).expand_as(best)  # (B, L): each tag its own previous
        backpointers = []  # per step, (B, L): the best previous tag of each tag
        for t in range(1, emissions.size(1)):
            extended, previous = (best.unsqueeze(2) + transitions).max(dim=1)  # (B, L, L) -> (B, L), (B, L)
            real = mask[:, t].unsqueeze(1)  # (B, 1)
            best = torch.where(real, extended + emissions[:, t], best)
            backpointers.append(torch.where(real, previous, stay))  # through padding the path stays put
        tags = (best + self.end).argmax(dim=1)  # (B,) each row's best last tag
        path = [tags]
        for previous in reversed(backpointers):
            tags = previous.gather(1, tags.unsqueeze(1)).squeeze(1)  # (B,)
            path.append(tags)
        path = torch.stack(path[::-1], dim=1)  # (B, T)
        return [row[:n].tolist() for row, n in zip(path, mask.sum(1).tolist())]
