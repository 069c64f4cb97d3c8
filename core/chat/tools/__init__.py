"""Tool calling: how tools reach the prompt, the grammar that constrains calls, and the parser."""
