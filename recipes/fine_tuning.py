"""Fine-tuning with frozen batch norms (issue 27). Placeholder docstring."""

from kbn_study.commands.fine_tuning import main

if __name__ == "__main__":
    main()
