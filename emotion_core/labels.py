"""The six emotion labels, in the data set's own order (the ids are the positions)."""

LABELS: tuple[str, ...] = ("sadness", "joy", "love", "anger", "fear", "surprise")
LABEL2ID: dict[str, int] = {name: i for i, name in enumerate(LABELS)}
ID2LABEL: dict[int, str] = dict(enumerate(LABELS))
