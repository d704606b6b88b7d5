from medbridge.cli import main

raise SystemExit(main())
