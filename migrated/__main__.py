from migrated.cli.main import main

raise SystemExit(main())
