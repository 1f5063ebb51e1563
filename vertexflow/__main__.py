if __name__ == "__main__":  # worker processes (spawn) import this module again
    # SIGINT/SIGTERM are taken first, before the command's modules load: one that comes during
    # start-up then ends the process with 130, not by the signal (stdlib only, so it loads at once)
    from .interrupts import INTERRUPTS

    INTERRUPTS.install()

    from .cli import main

    main(prog_name="vertexflow")
