"""``chat-tui`` entry point."""

import sys


def main() -> int:
    print("chat-tui is not built yet.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
