module modelport.local/pause

go 1.22
