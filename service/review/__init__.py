"""Review: the annotator's queue, decisions (single and double review), assignment,
adjudication, agreement and progress."""
