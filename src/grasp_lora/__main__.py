from grasp_lora.cli import main

raise SystemExit(main())
