"""Train on a user's own LLaVA records with one command: `vlmforge train --data FILE --image-folder DIR ...`."""
