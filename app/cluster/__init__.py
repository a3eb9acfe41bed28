"""The cluster model: definitions, their validation, and the files rendered from them."""
