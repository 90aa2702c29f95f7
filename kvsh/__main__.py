from kvsh.cli import main

raise SystemExit(main())
