"""What a person looks at: plots (the only matplotlib importer), run figures drawn from the files
training and evaluation write, the exploration page, store summaries, and the demo's last steps."""
