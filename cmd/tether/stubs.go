package main

import "context"

// Placeholders, each replaced by its own file.

func cmdDevices(ctx context.Context, g *globals, args []string) error   { panic("todo") }
func cmdAgent(ctx context.Context, g *globals, args []string) error     { panic("todo") }
func cmdForward(ctx context.Context, g *globals, args []string) error   { panic("todo") }
func cmdEndpoints(ctx context.Context, g *globals, args []string) error { panic("todo") }
