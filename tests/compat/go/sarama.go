package main

func runSarama(bootstrap string) {}
