"""Inputs: tasks (BBQ, the built-in items, multiple choice), BBQ's answer rules, plans and their
rendering, option-order permutations, conversations, context lengths, Winogender's items and
scorer, and the bounds every input file is read under. No model is loaded here."""
