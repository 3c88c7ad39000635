module freshpool-peers/go

go 1.19
