"""Pure: the rule language: model (values), load (YAML with line numbers), match (index, evaluate, explain)."""
