"""
Scores of predictions against gold labels: accuracy, per-class precision/recall/F1, macro-F1 and the
confusion matrix for classification; entity-level precision/recall/F1 for named-entity tagging,
with an entity counted only when its type and its exact span match (the CoNLL conlleval definition).

    from finetuning.metrics import score, format_report
    print(format_report(score(["ham", "spam"], ["ham", "ham"], ["ham", "spam"])))
"""

from collections import Counter


def precision_recall_f1(n_correct, n_predicted, n_gold):
    precision = n_correct / n_predicted if n_predicted else 0.0
    recall = n_correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def classification_report(gold, predicted, labels):
    """Accuracy, per-class precision/recall/F1, their unweighted mean F1 (macro-F1), and the confusion
    matrix: confusion[i][j] counts examples of labels[i] predicted as labels[j]."""
    index = {label: i for i, label in enumerate(labels)}
    confusion = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, predicted):
        confusion[index[g]][index[p]] += 1
    per_class = {}
    for i, label in enumerate(labels):
        n_predicted = sum(row[i] for row in confusion)
        per_class[label] = precision_recall_f1(confusion[i][i], n_predicted, sum(confusion[i]))
        per_class[label]["support"] = sum(confusion[i])
    return {
        "n": len(gold),
        "accuracy": sum(confusion[i][i] for i in range(len(labels))) / max(1, len(gold)),
        "macro_f1": sum(c["f1"] for c in per_class.values()) / len(labels),
        "per_class": per_class,
        "labels": list(labels),
        "confusion": confusion,
    }


def entity_spans(tags):
    """The entities of one IOB tag sequence as (type, start, end) with end exclusive, read as the
    CoNLL script conlleval does: B-X starts an entity; I-X continues one of type X, or starts one
    after O or another type; anything else ends it."""
    spans, start, kind = set(), None, None
    for i, tag in enumerate(list(tags) + ["O"]):  # the extra O closes an entity at the end
        prefix, _, tag_kind = tag.partition("-")
        if kind is not None and (prefix != "I" or tag_kind != kind):
            spans.add((kind, start, i))
            kind = None
        if prefix == "B" or (prefix == "I" and kind is None):
            start, kind = i, tag_kind
    return spans


def entity_report(gold_sentences, predicted_sentences):
    """Entity-level precision, recall and F1, per type and overall (micro-averaged): a predicted entity
    is correct only when its type and its exact span both match a gold one."""
    counts = Counter()  # (type, "correct" | "predicted" | "gold") -> n
    for gold, predicted in zip(gold_sentences, predicted_sentences):
        gold_spans, predicted_spans = entity_spans(gold), entity_spans(predicted)
        for kind, *_ in gold_spans & predicted_spans:
            counts[kind, "correct"] += 1
        for kind, *_ in predicted_spans:
            counts[kind, "predicted"] += 1
        for kind, *_ in gold_spans:
            counts[kind, "gold"] += 1
    kinds = sorted({kind for kind, _ in counts})
    per_type = {k: precision_recall_f1(counts[k, "correct"], counts[k, "predicted"], counts[k, "gold"]) for k in kinds}
    totals = {what: sum(counts[k, what] for k in kinds) for what in ("correct", "predicted", "gold")}
    overall = precision_recall_f1(totals["correct"], totals["predicted"], totals["gold"])
    return {"overall": overall | totals, "per_type": per_type}


def score(gold, predicted, labels):
    """The report of a split. Tagging: the word-level tag report, plus the entity report."""
    if gold and isinstance(gold[0], list):
        report = classification_report(sum(gold, []), sum(predicted, []), labels)
        report["entities"] = entity_report(gold, predicted)
        return report
    return classification_report(gold, predicted, labels)


def headline(report):
    """The number that picks the best checkpoint: entity F1 for tagging, else macro-F1 (which, unlike
    accuracy, a model can't raise by ignoring the rare class)."""
    return report["entities"]["overall"]["f1"] if "entities" in report else report["macro_f1"]


def format_report(report):
    """The report as lines of text for the console."""
    lines = [f"accuracy {report['accuracy']:.4f}  macro-F1 {report['macro_f1']:.4f}  ({report['n']} labelled)"]
    for label, c in report["per_class"].items():
        lines.append(f"  {label:>8}  P {c['precision']:.4f}  R {c['recall']:.4f}  F1 {c['f1']:.4f}  n {c['support']}")
    lines.append("  confusion (rows: gold, columns: predicted, in the order above)")
    lines += ["    " + " ".join(f"{n:6d}" for n in row) for row in report["confusion"]]
    if "entities" in report:
        overall = report["entities"]["overall"]
        lines.append(f"  entities  P {overall['precision']:.4f}  R {overall['recall']:.4f}  F1 {overall['f1']:.4f}  "
                     f"({overall['gold']} gold, {overall['predicted']} predicted)")
        for kind, c in report["entities"]["per_type"].items():
            lines.append(f"  {kind:>8}  P {c['precision']:.4f}  R {c['recall']:.4f}  F1 {c['f1']:.4f}")
    return "\n".join(lines)
