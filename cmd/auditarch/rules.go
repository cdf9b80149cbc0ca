package main

import (
	"fmt"
	"io"
)

func rulesCmd(args []string, stdout io.Writer) error {
	fs := newFlags("rules")
	rulesFile := fs.String("rules", "", "")
	configFile := fs.String("config", "", "")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, pos[0])
	}
	cfg, err := loadConfig(*configFile)
	if err != nil {
		return err
	}
	if *rulesFile != "" {
		cfg.Rules = *rulesFile
	}
	set, err := cfg.ruleSet()
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "# prepended at run time: -A never,exit -F pid=<the daemon's pid>")
	return set.Format(stdout)
}
