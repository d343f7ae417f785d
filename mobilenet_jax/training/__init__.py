"""The training loop and what only training needs: fine-tuning starts, metric logs, curves."""
