"""The shapes lab (`vlmforge demo`): every recipe trained and measured offline, in minutes."""
